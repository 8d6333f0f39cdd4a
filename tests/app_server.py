"""The real app in a child process (``python app.py``) and a real Chromium to drive it.

Import into a test module (``sys.path`` holds ``tests/``, as for ``pg_server``). The app runs
with the ``prosody`` encoder (a real encoder that needs no weights and embeds the demo in seconds)
and ``$SERE_TRAIN_STEPS`` as given, exactly as ``make app`` would with those settings.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
CHROMIUM = os.environ.get("SERE_CHROMIUM", "/usr/bin/chromium")
#: The labeling panel's title (file name · duration · clips left).
CLIP_TITLE = "#sere-clip-title"
#: The labeling pad: ``data-clip`` is the clip on screen, ``data-rev`` changes with every answer.
LABEL_PAD = "#sere-label-panel .sere-pad"
#: No sandbox (root in CI), no GPU, and nothing that phones home (this machine has no network).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--autoplay-policy=no-user-gesture-required"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """``python app.py`` on 127.0.0.1 with its own data folder; ``kill()`` is a real SIGKILL."""

    def __init__(self, data_dir: Path, cache_dir: Path, *, train_steps: int = 30,
                 database_url: str | None = None, prefix: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        """``prefix`` runs the app through another command (``unshare ...``, as a container would);
        ``env`` adds settings (``SERE_WORKSPACES=per-visitor``, a Space's variables)."""
        self.data_dir, self.cache_dir = Path(data_dir), Path(cache_dir)
        self.train_steps, self.database_url, self.prefix = train_steps, database_url, prefix
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"app-{self.starts}.log"

    def start(self, timeout: float = 120.0, *, same_port: bool = False) -> AppProcess:
        """``same_port``: the address of the previous start, so a browser keeps its local storage."""
        self.starts += 1
        self.port = self.port if same_port and self.port else free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SERE_", "GRADIO_", "SPACE_", "OAUTH_", "OPENID_"))}
        env.update(SERE_DATA_DIR=str(self.data_dir), SERE_CACHE_DIR=str(self.cache_dir), SERE_ENCODER="prosody",
                   SERE_WARM_UP="0",  # what the tests need they do themselves; the warm-up has its own test
                   SERE_TRAIN_STEPS=str(self.train_steps), SERE_TORCH_THREADS="1", OMP_NUM_THREADS="1",
                   GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(self.port), HF_HUB_OFFLINE="1",
                   PYTHONUNBUFFERED="1")
        if self.database_url:
            env["SERE_DATABASE_URL"] = self.database_url
        env.update(self.env)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([*self.prefix, sys.executable, str(REPO / "app.py")], cwd=REPO, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{self.tail()}")

    def children(self) -> list[int]:
        """Processes the app started (none expected: training runs in threads)."""
        if self.proc is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.proc.pid:
                found.append(int(stat.parent.name))
        return found

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, no flush; exactly what a power cut does to the process."""
        assert self.proc is not None and self.proc.poll() is None, "the app is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


#: One Chromium per test process (a launch costs about a second of CPU): ``{"playwright", "browser"}``.
_CHROMIUM: dict[str, object] = {}


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Debian Chromium through playwright; skips the test without either. The browser is
    shared by the tests of a process; the browser contexts (visitors) a test opened close at its end."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    browser = _CHROMIUM.get("browser")
    if browser is None or not browser.is_connected():
        playwright = _CHROMIUM.get("playwright") or sync_api.sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        if not _CHROMIUM:
            atexit.register(_close_chromium)
        _CHROMIUM.update(playwright=playwright, browser=browser)
    before = set(browser.contexts)
    try:
        yield browser
    finally:
        for context in browser.contexts:
            if context not in before:
                context.close()


def _close_chromium() -> None:
    browser, playwright = _CHROMIUM.pop("browser", None), _CHROMIUM.pop("playwright", None)
    if browser is not None:
        browser.close()
    if playwright is not None:
        playwright.stop()


def open_page(browser, url: str, **context: object):
    """A new browser context (its own cookies and storage: another visitor) showing the app, once
    the page has loaded the visitor's screens (``data-ready``)."""
    context = browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **context})
    return _show(context.new_page(), url)


def come_back(old_page, url: str):
    """The same visitor in a new tab of their browser (its cookies and local storage) after a server
    restart: the old tab may be reloading itself as the server returns, which a navigation races."""
    return _show(old_page.context.new_page(), url)


def _show(page, url: str):
    page.sere_errors = []
    page.on("pageerror", lambda exc: page.sere_errors.append(f"{exc}\n{(exc.stack or '')[:800]}"))  # where: the stack
    page.goto(url)
    wait_ready(page)
    return page


def wait_ready(page, timeout: float = 60000) -> None:
    page.wait_for_selector("#sere-project-line[data-ready]", timeout=timeout)


def tab(page, name: str) -> None:
    # Gradio keeps a hidden copy of the tab bar (to measure it) and may repeat a tab in its
    # overflow menu: press the one on screen, then wait until a copy says it is selected
    page.get_by_role("tab", name=name).locator("visible=true").first.click()
    page.get_by_role("tab", name=name, selected=True).first.wait_for(state="attached", timeout=30000)


def open_project(page, name: str) -> None:
    """Choose a project in the "Your projects" list, as a user does."""
    tab(page, "1 · Project")
    page.click("#sere-project-dd input")
    page.get_by_role("option", name=name, exact=True).click()
    page.locator("#sere-project-line", has_text=name).wait_for(timeout=30000)


def label_panel(page) -> None:
    """Go to the labeling tab and wait for a clip on the pad."""
    tab(page, "2 · Source clips")
    page.wait_for_selector(f"{LABEL_PAD}:not([data-clip=''])", timeout=30000)


def clip_on_screen(page) -> str:
    """The file name of the clip in the labeling panel."""
    return page.inner_text(CLIP_TITLE).split(" ·")[0].strip()


def pad_state(page, pad: str = LABEL_PAD) -> tuple[str, str]:
    """``(clip id, rev)`` the pad shows now."""
    return page.get_attribute(pad, "data-clip"), page.get_attribute(pad, "data-rev")


def wait_answer(page, rev: str, pad: str = LABEL_PAD, timeout: float = 30000) -> None:
    """Wait for the pad's answer to the action sent at ``rev``: a newer value, nothing pending."""
    page.wait_for_function(
        "([sel, rev]) => { const el = document.querySelector(sel);"
        " return el && el.dataset.rev !== rev && el.parentElement.dataset.busy !== '1'; }",
        arg=[pad, rev], timeout=timeout)


def press_and_wait(page, key: str) -> str:
    """Press a labeling key (``1``-``9``, ``s``); returns the clip it applied to once the answer came."""
    clip = clip_on_screen(page)
    _, rev = pad_state(page)
    page.keyboard.press(key)
    wait_answer(page, rev)
    return clip


class RawSession:
    """One page session spoken over plain HTTP, as the browser speaks it (``queue/join`` with a
    ``fn_index``, then the ``queue/data`` event stream): it can call every handler, the private
    ones included, with any inputs. What a page keeps in ``gr.State`` stays on the server, keyed
    by this session's hash; ``gr.BrowserState`` values are sent as inputs."""

    def __init__(self, url: str, cookies: dict[str, str] | None = None) -> None:
        import secrets

        import httpx

        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60, cookies=cookies)
        self.hash = secrets.token_hex(6)
        self.config = self.http.get("/config").json()

    def component(self, elem_id: str) -> int:
        return next(c["id"] for c in self.config["components"] if c.get("props", {}).get("elem_id") == elem_id)

    def handler(self, name: str) -> int:
        """The fn_index of the handler called ``name`` (its function's name, private or public)."""
        return next(i for i, d in enumerate(self.config["dependencies"]) if d.get("api_name") == name)

    def handlers(self) -> dict[str, int]:
        return {d["api_name"]: i for i, d in enumerate(self.config["dependencies"]) if d.get("api_name")}

    def inputs(self, fn_index: int) -> list[int]:
        return self.config["dependencies"][fn_index]["inputs"]

    def call(self, fn_index: int, data: list, event_data: dict | None = None, timeout: float = 60.0) -> dict:
        """Run handler ``fn_index``; returns ``{"success": bool, "output": ..., "log": [...]}`` (the
        error's message in ``output["error"]`` when it refused; ``log``: its gr.Info and gr.Warning
        messages)."""
        body = {"data": data, "fn_index": fn_index, "session_hash": self.hash, "event_data": event_data,
                "trigger_id": None}
        joined = self.http.post("/gradio_api/queue/join", json=body)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        deadline = time.monotonic() + timeout
        log: list[str] = []
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.hash},
                              timeout=timeout) as stream:
            for line in stream.iter_lines():
                if time.monotonic() > deadline:
                    break
                if not line.startswith("data:"):
                    continue
                import json

                message = json.loads(line[5:])
                if message.get("event_id") != event_id:
                    continue
                if message.get("msg") == "log":
                    log.append(str(message.get("log")))
                if message.get("msg") == "process_completed":
                    return {"success": bool(message.get("success")), "output": message.get("output") or {}, "log": log}
        raise TimeoutError(f"no answer from handler {fn_index} within {timeout:.0f} s")

    def upload(self, paths: list[Path]) -> list[dict]:
        """Gradio's upload route, as the page uses it; returns FileData dicts for handler inputs."""
        files = [("files", (Path(p).name, Path(p).read_bytes())) for p in paths]
        stored = self.http.post("/gradio_api/upload", files=files).json()
        return [{"path": s, "orig_name": Path(p).name, "meta": {"_type": "gradio.FileData"}}
                for s, p in zip(stored, paths)]

    def close(self) -> None:
        self.http.close()


def page_session(url: str, token: str | None = None, project: int | None = None,
                 cookies: dict[str, str] | None = None) -> RawSession:
    """A :class:`RawSession` that has loaded the page as a browser with visitor ``token`` (None: a
    new visitor) and ``project`` open; ``.token`` is the visitor token the server then holds."""
    session = RawSession(url, cookies)
    answer = session.call(session.handler("identify"), [token, project, None, "least confident first", "emotion"])
    assert answer["success"], answer
    session.token = answer["output"]["data"][0]
    return session
