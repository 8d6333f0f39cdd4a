"""A public Space, as strangers meet it: the real ``app.py`` in ``per-visitor`` mode (as it runs on
a Space, which the environment here imitates, OAuth included), driven over plain HTTP, through
``gradio_client`` and in real Chromium.

* With another visitor's ids, every public endpoint and every page handler answers "not found"
  or shows nothing, and nothing of theirs changes; files are served only under unguessable names.
* Two anonymous visitors and two signed-in users each see only their own projects and their own
  demo (its labels included), and each still has their open project after a restart.

The signed-in users are made the way Hugging Face's OAuth leaves them: a session cookie signed
with the Space's OAuth secret, holding the user's profile.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from app_server import (  # noqa: E402
    AppProcess,
    chromium,
    come_back,
    label_panel,
    open_page,
    page_session,
    press_and_wait,
    tab,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workspaces_app")]  # one worker: its module fixture is made once

OAUTH_SECRET = "a-test-oauth-secret"
#: What a Space sets for an app with ``hf_oauth: true`` (the provider is never contacted here).
SPACE_ENV = {"SYSTEM": "spaces", "SPACE_ID": "sere/test", "OAUTH_CLIENT_ID": "test-client",
             "OAUTH_CLIENT_SECRET": OAUTH_SECRET, "OAUTH_SCOPES": "openid profile",
             "OPENID_PROVIDER_URL": "http://127.0.0.1:9", "SERE_SECRET": "a-fixed-server-secret-for-tests"}
NOT_FOUND = "not found"


def signed_in_cookie(username: str) -> str:
    """The session cookie Gradio's OAuth callback leaves for ``username`` (Starlette's signed session)."""
    import itsdangerous

    key = hashlib.sha256((OAUTH_SECRET + "-v4").encode()).hexdigest()
    info = {"oauth_info": {"access_token": "token", "expires_at": int(time.time()) + 3600,
                           "userinfo": {"preferred_username": username, "name": username.title(),
                                        "profile": f"https://huggingface.co/{username}", "picture": ""}}}
    return itsdangerous.TimestampSigner(key).sign(base64.b64encode(json.dumps(info).encode())).decode()


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("space")
    app = AppProcess(tmp / "data", tmp / "cache", train_steps=4, env=SPACE_ENV)
    app.start()
    yield app
    app.stop()


def _output(answer: dict) -> list:
    assert answer["success"], answer
    return answer["output"]["data"]


def _pad(data: list) -> dict:
    return next(x for x in data if isinstance(x, dict) and x.get("kind") == "label")


def test_another_visitors_ids_answer_not_found_everywhere(space):
    import httpx
    from gradio_client import Client

    # A loads the demo, labels a clip, trains, exports
    a = page_session(space.url)
    data = _output(a.call(a.handler("load_demo"), [None, "least confident first", "emotion"]))
    pid, clip = data[0], _pad(data)["clip"]
    _output(a.call(a.handler("label_act"), [None, pid, None], {"action": "label", "clip": clip, "emotion": "happy"}))
    for emotion, n in (("neutral", 2), ("sad", 2), ("angry", 2)):
        for _ in range(n):
            nxt = _pad(_output(a.call(a.handler("label_act"), [None, pid, None],
                                      {"action": "skip", "clip": None})))["clip"]
            _output(a.call(a.handler("label_act"), [None, pid, None],
                           {"action": "label", "clip": nxt, "emotion": emotion}))
    _output(a.call(a.handler("press_train"), [None, pid]))
    client_a = Client(space.url, verbose=False)
    deadline = time.monotonic() + 300
    while client_a.predict(a.token, pid, api_name="/training_status").get("status") != "succeeded":
        assert time.monotonic() < deadline, "A's training did not finish"
        time.sleep(1)
    export = _output(a.call(a.handler("export_predictions"), [None, pid]))[0]
    a_labels = client_a.predict(a.token, api_name="/list_projects")[0]["labeled"]
    assert a_labels == 7

    # B, a stranger, with A's ids: the public API
    b = page_session(space.url)
    client_b = Client(space.url, verbose=False)
    assert client_b.predict(b.token, api_name="/list_projects") == []
    assert client_b.predict(b.token, api_name="/visitor") == b.token  # a valid token stays
    assert client_b.predict("made-up", api_name="/visitor") != "made-up"
    for name, args in (("/label", (pid, clip, "sad")), ("/train", (pid,)), ("/training_status", (pid,)),
                       ("/predictions", (pid, 1))):
        with pytest.raises(Exception, match=NOT_FOUND):
            client_b.predict(b.token, *args, api_name=name)
    with pytest.raises(Exception, match="Unknown visitor token"):
        client_b.predict("made-up", api_name="/list_projects")

    # ... and every page handler that takes a project, a clip or a run
    refused = {
        "open_project": [None, pid, "least confident first", "emotion"],
        "save_emotions": [None, pid, "a, b", "least confident first", "emotion"],
        "rename": [None, pid, "mine", "least confident first", "emotion"],
        "delete": [None, pid, "least confident first", "emotion"],
        "suggest": [None, pid, None],
        "demo_labels": [None, pid, None],
        "press_train": [None, pid],
        "cancel": [None, pid],
        "choose": [None, pid, clip, None],
        "recolor": [None, pid, "language"],
        "show_page": [None, pid, "least confident first", 1],
        "export_predictions": [None, pid],
        "export_labels": [None, pid],
        "export_model": [None, pid],
    }
    for name, data in refused.items():
        answer = b.call(b.handler(name), data)
        if answer["success"]:  # a screen shows B's own (empty) state, never A's project
            assert f"data-project='{pid}'" not in json.dumps(answer["output"]), name
            assert "Demo" not in json.dumps(answer["output"]), name
        else:  # refused: not found, or (the project menu) not among B's choices
            error = answer["output"]["error"]
            assert NOT_FOUND in error or "not in the list of choices" in error, (name, answer)
    for name, data, event in (
            ("label_act", [None, pid, None], {"action": "label", "clip": clip, "emotion": "sad"}),
            ("review_act", [None, pid, "least confident first", 1], {"action": "confirm", "clip": clip}),
            ("pick", [None, pid, None], {"clip": clip}),
            ("field_act", [None, pid, "least confident", None], {"action": "label", "clip": clip, "emotion": "sad"}),
            *(("selection_act", [None, pid, "emotion", None],
               {"action": action, "clips": [clip], "emotion": "sad"})
              for action in ("label", "confirm", "unlabel", "play", "export"))):
        answer = b.call(b.handler(name), data, event)
        said = json.dumps(answer["output"]) + " ".join(answer["log"])
        assert NOT_FOUND in said, (name, answer)
    upload = b.call(b.handler("upload_source"), [None, pid, b.upload([Path(__file__).parents[1] / "data" / "demo" /
                                                                      "source" / "de_s03_01.flac"]), None, None])
    assert not upload["success"] and NOT_FOUND in upload["output"]["error"]

    # nothing of A's changed
    [mine] = client_a.predict(a.token, api_name="/list_projects")
    assert (mine["id"], mine["labeled"], mine["name"]) == (pid, a_labels, "Demo: German → English")
    rows = client_a.predict(a.token, pid, 1, api_name="/predictions")
    assert rows["total"] == 40

    # files: A's export is served under a name nobody can guess; nothing else of the data folder is
    http = httpx.Client(base_url=space.url, timeout=30)
    assert http.get(export["url"]).status_code == 200  # A's own download link works
    folder = Path(export["path"]).parent  # Gradio's copy: a hash of the file and a seed of this process
    assert len(folder.name) == 64 and f"project-{pid}" not in export["path"]
    written = [p for p in (space.data_dir / "exports").rglob("*.csv")]
    assert written and all(len(p.parent.name) == 32 for p in written)  # SERE's own: a random folder each
    data_dir = space.data_dir.resolve()
    for path in (f"{data_dir}/exports", f"{data_dir}/exports/project-{pid}", f"{data_dir}/sere.db",
                 f"{data_dir}/secret.key", f"{data_dir}/segments"):
        for route in ("/gradio_api/file=", "/gradio_api/file/"):
            response = http.get(route + path)
            assert response.status_code in (403, 404), (route + path, response.status_code)


@pytest.mark.browser
def test_each_visitor_has_their_own_projects_and_demo_and_keeps_them_over_a_restart(space):
    cookie = {"name": "session", "domain": "localhost", "path": "/", "expires": -1, "httpOnly": True,
              "secure": False, "sameSite": "Lax"}
    url = space.url.replace("127.0.0.1", "localhost")  # the cookies are the host's
    with chromium() as browser:
        visitors = {}
        for who in ("anon-a", "anon-b", "alice", "bob"):
            signed_in = [] if who.startswith("anon") else [{**cookie, "value": signed_in_cookie(who)}]
            page = open_page(browser, url, storage_state={"cookies": signed_in, "origins": []})
            if signed_in:
                assert f"Signed in as {who}" in page.inner_text("#sere-identity")
            else:
                assert "yours alone" in page.inner_text("#sere-identity")
            assert page.get_attribute("#sere-project-line", "data-project") == ""  # nobody else's
            visitors[who] = page

        projects, labeled = {}, {"anon-a": 2, "anon-b": 0, "alice": 1, "bob": 0}
        for who, page in visitors.items():
            page.click("#sere-load-demo")
            page.wait_for_selector("#sere-project-line[data-project]:not([data-project=''])", timeout=60000)
            projects[who] = page.get_attribute("#sere-project-line", "data-project")
            label_panel(page)
            assert page.get_attribute("#sere-counts", "data-total") == "0"  # a fresh demo for each
            for key in "12"[:labeled[who]]:
                press_and_wait(page, key)
        assert len(set(projects.values())) == 4
        for page in visitors.values():  # each lists only their own project
            tab(page, "1 · Project")
            page.click("#sere-project-dd input")
            options = page.get_by_role("option")
            options.first.wait_for(timeout=10000)
            assert options.count() == 1
            page.keyboard.press("Escape")

        space.stop()
        space.start(same_port=True)
        for who, old in visitors.items():
            page = come_back(old, url)
            assert page.get_attribute("#sere-project-line", "data-project") == projects[who]
            label_panel(page)
            assert page.get_attribute("#sere-counts", "data-total") == str(labeled[who])
            assert not page.sere_errors, page.sere_errors
