"""The resonance field as a place to act, in a real Chromium against a real server: a clip clicked
on the map is labeled by key, five clips lassoed on the map are labeled in one action, the colour
switches change the figure's encoding, and the review buttons fit a 1280x720 screen.

The demo project is trained once (prosody features, a short run) before the server starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from app_server import REPO, AppProcess, chromium, open_page, open_project, pad_state, tab  # noqa: E402

from sere_core import storage as st  # noqa: E402
from sere_core.app import AppContext, AppSettings, training  # noqa: E402
from sere_core.app import demo as dm  # noqa: E402
from sere_core.app.testing import local_caller  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("field_app")]  # one worker: its module fixture is made once
ME = local_caller()
ARTIFACTS = REPO / "tmp" / "test-artifacts" / "field"
FIELD = "#sere-field"
GD = "document.querySelector('#sere-field .js-plotly-plot')"
FIELD_PAD = "#sere-field-panel .sere-pad"
SELECTION = "#sere-selection .sere-pad"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    """A server whose workspace holds the trained demo: ``(app, project name, data folder)``."""
    tmp = tmp_path_factory.mktemp("field")
    ctx = AppContext.open(AppSettings(data_dir=tmp / "data", cache_dir=tmp / "cache", encoder="prosody",
                                      train_steps=30))
    try:
        summary = dm.load_demo(ctx, ME, warm=False)
        dm.apply_reference_labels(ctx, ME, summary.id)
        training.start_training(ctx, ME, summary.id)
        assert ctx.jobs.wait(timeout=600)
    finally:
        ctx.close()
    app = AppProcess(tmp / "data", tmp / "cache", train_steps=900).start()  # a run started here is long
    try:
        yield app, summary.name, summary.id, tmp / "data"
    finally:
        app.stop()


@pytest.fixture
def browser():
    with chromium() as b:
        yield b


def labels(data_dir: Path, project_id: int) -> dict[int, str]:
    ctx = AppContext.open(AppSettings(data_dir=data_dir, cache_dir=data_dir.parent / "cache", encoder="prosody"))
    try:
        with ctx.session() as s:
            return st.labels_for_project(s, project_id)
    finally:
        ctx.close()


def open_field(page, name: str) -> None:
    open_project(page, name)
    tab(page, "5 · Resonance field")
    page.wait_for_selector(f"{FIELD} [data-key^='run-']", timeout=60000)


def points_on_screen(page) -> list[dict]:
    """Every clip point with its page coordinates (what a mouse aims at)."""
    return page.evaluate(f"""() => {{
        const gd = {GD}, xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        const out = [];
        gd._fullData.forEach((t) => {{
            if (!t.meta || t.meta.kind !== 'clips') return;
            for (let i = 0; i < t.x.length; i++) {{
                if (t.x[i] === null) continue;
                out.push({{clip: String(t.customdata[i][0]), name: t.customdata[i][1], role: t.customdata[i][3],
                          x: r.left + xa._offset + xa.l2p(t.x[i]), y: r.top + ya._offset + ya.l2p(t.y[i])}});
            }}
        }});
        return out;
    }}""")


def five_in_a_box(points: list[dict]) -> tuple[list[str], tuple[float, float, float, float]]:
    """Five points and a box around exactly them (and no other point)."""
    for p in points:
        near = sorted(points, key=lambda q: max(abs(q["x"] - p["x"]), abs(q["y"] - p["y"])))
        d5 = max(abs(near[4]["x"] - p["x"]), abs(near[4]["y"] - p["y"]))
        d6 = max(abs(near[5]["x"] - p["x"]), abs(near[5]["y"] - p["y"]))
        if d6 - d5 > 6:  # room for a margin between the fifth and the sixth
            m = d5 + (d6 - d5) / 2
            return [q["clip"] for q in near[:5]], (p["x"] - m, p["y"] - m, p["x"] + m, p["y"] + m)
    raise AssertionError("no five points stand apart on the map")


def test_label_from_the_map_by_click_and_by_key_and_colour_it_by_anything(served, browser):
    app, name, pid, data_dir = served
    page = open_page(browser, app.url)
    open_field(page, name)
    target = next(p for p in points_on_screen(page) if p["role"] == "target"
                  and int(p["clip"]) not in labels(data_dir, pid))
    page.mouse.move(target["x"] - 3, target["y"] - 3)
    page.mouse.click(target["x"], target["y"])
    page.wait_for_selector(f"{FIELD_PAD}:not([data-clip='']):has-text('Predicted')", timeout=30000)
    clicked = page.get_attribute(FIELD_PAD, "data-clip")  # the point under the mouse (or one it hides)
    if clicked != target["clip"]:
        target = next(p for p in points_on_screen(page) if p["clip"] == clicked)
        assert int(clicked) not in labels(data_dir, pid), "the click hit a labeled clip"
    # the clip is marked on the map
    page.wait_for_selector(f"{FIELD} [data-chosen='{target['clip']}']", timeout=10000)
    page.keyboard.press("2")  # the second emotion, as in labeling
    page.wait_for_selector(f"{FIELD_PAD}:not([data-clip='{target['clip']}'])", timeout=30000)
    stored = labels(data_dir, pid)
    emotions = page.eval_on_selector_all(f"{FIELD_PAD} button[data-action='label']", "bs => bs.map(b => b.dataset.emotion)")
    assert stored[int(target["clip"])] == emotions[1]
    after = page.get_attribute(FIELD_PAD, "data-clip")
    assert int(after) not in stored  # on to an unlabeled clip
    page.wait_for_selector(f"{FIELD} [data-chosen='{after}']", timeout=10000)
    page.keyboard.press("u")  # undo: the label is gone and the clip is back
    page.wait_for_selector(f"{FIELD_PAD}[data-clip='{target['clip']}']", timeout=30000)
    assert int(target["clip"]) not in labels(data_dir, pid)

    # colour by anything: the figure's encoding changes
    for key, text in (("language", "language"), ("confidence", "confidence of the prediction"),
                      ("disagreement", "disagreement between the ensemble's models"),
                      ("role", "source or target language")):
        page.click("#sere-color-by input")
        page.get_by_role("option", name=text, exact=True).click()
        page.wait_for_selector(f"{FIELD} [data-key*='-{key}-']", timeout=30000)
        colour_by = page.evaluate(f"() => [...new Set({GD}.data.filter(t => t.meta && t.meta.kind === 'clips')"
                                  ".map(t => t.meta.color_by))]")
        assert colour_by == [key]
    groups = page.evaluate(f"() => {GD}.data.filter(t => t.meta && t.meta.kind === 'clips').map(t => t.name)")
    assert sorted(groups) == ["source language", "target language"]
    assert not page.sere_errors, page.sere_errors


def test_lasso_five_clips_and_label_them_in_one_action(served, browser, tmp_path):
    """Then one-click downloads: the selection as CSV, the field as interactive HTML and as PNG
    (plotly's camera), and the Export tab's predictions (no second click on a file box)."""
    app, name, pid, data_dir = served
    page = open_page(browser, app.url, accept_downloads=True)
    open_field(page, name)
    before = labels(data_dir, pid)
    chosen, box = five_in_a_box(points_on_screen(page))
    lasso(page, box)
    page.wait_for_selector(f"{SELECTION}:has-text('5 clips selected')", timeout=30000)
    picked = page.evaluate(f"() => {GD}.data.filter(t => t.meta && t.meta.kind === 'clips')"
                           ".reduce((n, t) => n + (t.selectedpoints ? t.selectedpoints.length : 0), 0)")
    assert picked == 5  # the others grey out
    page.locator(SELECTION).get_by_role("button", name="sad", exact=True).click()
    page.wait_for_selector(f"{SELECTION}:has-text('Labeled sad')", timeout=30000)
    stored = labels(data_dir, pid)
    assert all(stored.get(int(c)) == "sad" for c in chosen)
    assert sum(1 for c, e in stored.items() if e == "sad" and before.get(c) != "sad") <= 5
    page.locator(FIELD).screenshot(path=str(ARTIFACTS / "field-selection.png"))
    # unlabel them again: the labels made before stay as they were
    page.locator(SELECTION).get_by_role("button", name="Unlabel").click()
    page.wait_for_selector(f"{SELECTION}:has-text('Unlabeled')", timeout=30000)
    stored = labels(data_dir, pid)
    assert all(stored.get(int(c)) is None for c in chosen if int(c) not in before)

    with page.expect_download(timeout=60000) as got:
        page.click("#sere-sel-export")
    rows = tmp_path / "selection.csv"
    got.value.save_as(rows)
    assert sorted(r.split(",")[0] for r in rows.read_text().splitlines()[1:]) == sorted(chosen)
    with page.expect_download(timeout=60000) as got:
        page.click("#sere-field-html")
    html_file = tmp_path / got.value.suggested_filename
    got.value.save_as(html_file)
    text = html_file.read_text(encoding="utf-8")
    assert html_file.suffix == ".html" and "plotly" in text.lower() and len(text) > 1_000_000  # plotly.js inside
    with page.expect_download(timeout=60000) as got:
        page.locator(f"{FIELD} .modebar-btn[data-title*='png' i]").first.click()
    assert got.value.suggested_filename == "resonance-field.png"
    tab(page, "7 · Export")
    with page.expect_download(timeout=60000) as got:
        page.click("#sere-exp-pred")
    assert got.value.suggested_filename.endswith("-predictions.csv")
    assert not page.sere_errors, page.sere_errors


def lasso(page, box) -> None:
    x0, y0, x1, y1 = box
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def search(page, text: str) -> None:
    """Search the clip browser by file name and wait for the page that answers it."""
    rev = page.get_attribute("#sere-browser [data-rev]", "data-rev")
    page.locator("#sere-browser-search").get_by_role("textbox").fill(text)
    page.locator("#sere-browser-search").get_by_role("textbox").press("Enter")
    page.wait_for_selector(f"#sere-browser [data-rev]:not([data-rev='{rev}'])", timeout=30000)


def test_the_clip_browser_and_the_map_select_the_same_clips(served, browser):
    app, name, _pid, _data = served
    page = open_page(browser, app.url)
    open_field(page, name)
    page.wait_for_selector("#sere-browser-caption:has-text('of 72')", timeout=30000)  # every clip, paged
    assert page.locator("#sere-browser tbody tr").count() == 50
    search(page, "EN_A01")  # any case
    rows = page.locator("#sere-browser tbody tr")
    names = [rows.nth(i).locator("button.sere-open").inner_text() for i in range(rows.count())]
    assert names and all("en_a01" in n for n in names)
    # ticks in the browser are the selection on the map
    rows.nth(0).locator("input[type=checkbox]").check()
    rows.nth(1).locator("input[type=checkbox]").check()
    page.wait_for_selector(f"{SELECTION}:has-text('2 clips selected')", timeout=30000)
    page.wait_for_selector(f"{FIELD} [data-selected='2']", timeout=10000)
    # ticks faster than the server answers (two at once, an untick 30 ms later): none is lost or undone
    search(page, "en_")
    page.evaluate("""async () => {
        const boxes = [...document.querySelectorAll('#sere-browser tbody input[type=checkbox]')];
        boxes.filter((b) => !b.checked).slice(0, 2).forEach((b) => b.click());
        await new Promise((done) => setTimeout(done, 30));
        boxes.find((b) => b.checked).click();
    }""")
    page.wait_for_selector(f"{SELECTION}:has-text('3 clips selected')", timeout=30000)
    page.wait_for_selector(f"{FIELD} [data-selected='3']", timeout=10000)
    assert page.locator("#sere-browser tbody input[type=checkbox]:checked").count() == 3
    # a lasso on the map ticks its clips in the browser
    chosen, box = five_in_a_box(points_on_screen(page))
    lasso(page, box)
    page.wait_for_selector(f"{SELECTION}:has-text('5 clips selected')", timeout=30000)
    lassoed = next(p for p in points_on_screen(page) if p["clip"] == chosen[0])
    search(page, lassoed["name"])
    row = page.locator(f"#sere-browser tbody tr[data-clip='{chosen[0]}']")
    assert row.locator("input[type=checkbox]").is_checked()
    # a file name opens the clip in the clip panel, marked on the map
    row.locator("button.sere-open").click()
    page.wait_for_selector(f"{FIELD_PAD}[data-clip='{chosen[0]}']", timeout=30000)
    page.wait_for_selector(f"{FIELD} [data-chosen='{chosen[0]}']", timeout=10000)
    search(page, "")
    page.locator("#sere-browser").screenshot(path=str(ARTIFACTS / "clip-browser.png"))
    assert not page.sere_errors, page.sere_errors


def test_results_at_a_glance_and_review_buttons_on_a_laptop_screen(served, browser):
    app, name, _pid, _data = served
    page = open_page(browser, app.url, viewport={"width": 1280, "height": 720})
    open_project(page, name)
    tab(page, "4 · Train")
    page.wait_for_selector("#sere-summary:has-text('40 target clips predicted')", timeout=30000)
    assert "UAR" in page.inner_text("#sere-summary")  # the demo's corpus labels
    page.wait_for_selector("#sere-confusion .js-plotly-plot", timeout=30000)
    page.click("#sere-to-field")
    page.get_by_role("tab", name="5 · Resonance field", selected=True).first.wait_for(timeout=10000)
    tab(page, "6 · Review")
    page.locator("#sere-review-table [data-testid='cell-0-1']").click()
    page.wait_for_selector("#sere-review-panel .sere-pad:has-text('Predicted')", timeout=30000)
    box = page.locator("#sere-confirm").bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 720
    assert "%" in page.inner_text("#sere-review-table")
    shown, _ = pad_state(page, "#sere-review-panel .sere-pad")
    page.keyboard.press("Enter")  # confirm: on to the next clip, whose row stands out
    page.wait_for_selector(f"#sere-review-panel .sere-pad:not([data-clip='{shown}'])", timeout=30000)
    current = page.get_attribute("#sere-review-panel .sere-pad", "data-clip")
    page.wait_for_function(  # the cells styled as the current row are that clip's
        """clip => { const cells = [...document.querySelectorAll('#sere-review-table [style*="font-weight: 600"]')];
                     return cells.length > 0 && cells[0].innerText.trim() === clip
                            && cells.every(el => el.parentElement === cells[0].parentElement); }""",
        arg=current, timeout=30000)
    page.screenshot(path=str(ARTIFACTS / "review-1280x720.png"))


def test_the_field_moves_while_it_trains(served, browser):
    """A long run (the server trains 900 steps per model): the field shows the newest snapshot, and
    a later poll a newer one; the Train tab says how long is left. Cancelled, it leaves the
    project's results as they were."""
    app, name, _pid, _data = served
    page = open_page(browser, app.url)
    open_project(page, name)
    tab(page, "4 · Train")
    page.click("#sere-train")
    page.wait_for_selector("#sere-progress-text:has-text('left')", timeout=120000)  # a time estimate
    tab(page, "5 · Resonance field")
    page.wait_for_selector(f"{FIELD} [data-key^='live-']", timeout=120000)
    first = page.get_attribute(f"{FIELD} [data-key]", "data-key")
    title = page.evaluate(f"() => {GD}.layout.title.text")
    assert "step" in title and "live" in title
    page.wait_for_function(  # a later step drawn (a redraw of the same snapshot has the same title)
        f"""([first, title]) => {{ const key = document.querySelector('{FIELD} [data-key]').dataset.key;
                                   const now = {GD}.layout.title.text;
                                   return key.startsWith('live-') && key !== first && now.includes('step')
                                          && now !== title; }}""", arg=[first, title], timeout=120000)
    tab(page, "4 · Train")
    page.click("#sere-cancel")
    page.wait_for_selector("#sere-progress-text[data-status=cancelled]", timeout=60000)
    assert not page.sere_errors, page.sere_errors


def test_every_tab_is_reachable_on_a_phone(served, browser):
    """390 px wide: the tabs that do not fit are in Gradio's overflow menu; each one opens, and
    the field and its clip panel fit the width."""
    app, name, _pid, _data = served
    page = open_page(browser, app.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    names = ["1 · Project", "2 · Source clips", "3 · Target audio", "4 · Train", "5 · Resonance field",
             "6 · Review", "7 · Export"]
    for tab_name in names:
        visible = [b for b in page.get_by_role("tab", name=tab_name).all() if b.is_visible()]
        if not visible:  # in the overflow menu, as a plain button
            page.get_by_role("button", name="More tabs").click()
            visible = [b for b in page.get_by_role("button", name=tab_name, exact=True).all() if b.is_visible()]
        assert visible, tab_name
        visible[0].click()
        page.get_by_role("tab", name=tab_name, selected=True).first.wait_for(state="attached", timeout=10000)
        if tab_name == "1 · Project":
            open_project(page, name)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 400, width  # nothing forces the page sideways
    page.screenshot(path=str(ARTIFACTS / "phone-review.png"))
