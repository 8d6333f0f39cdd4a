"""The real app in a child process (``python app.py``) and a real Chromium to drive it.

Import into a test module (``sys.path`` holds ``tests/``, as for ``pg_server``). The app runs
with the ``prosody`` encoder (a real encoder that needs no weights and embeds the demo in seconds)
and ``$SERE_TRAIN_STEPS`` as given, exactly as ``make app`` would with those settings.
"""

from __future__ import annotations

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
#: The labeling panel's title without Gradio's status overlay ("processing | 0.4s").
CLIP_TITLE = "#sere-clip-title [data-testid=markdown]"
#: No sandbox (root in CI), no GPU, and nothing that phones home (this machine has no network).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--autoplay-policy=no-user-gesture-required"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """``python app.py`` on 127.0.0.1 with its own data folder; ``kill()`` is a real SIGKILL."""

    def __init__(self, data_dir: Path, cache_dir: Path, *, train_steps: int = 30,
                 database_url: str | None = None, prefix: tuple[str, ...] = ()) -> None:
        """``prefix`` runs the app through another command (``unshare ...``, as a container would)."""
        self.data_dir, self.cache_dir = Path(data_dir), Path(cache_dir)
        self.train_steps, self.database_url, self.prefix = train_steps, database_url, prefix
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
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SERE_", "GRADIO_"))}
        env.update(SERE_DATA_DIR=str(self.data_dir), SERE_CACHE_DIR=str(self.cache_dir), SERE_ENCODER="prosody",
                   SERE_TRAIN_STEPS=str(self.train_steps), SERE_TORCH_THREADS="1", OMP_NUM_THREADS="1",
                   GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(self.port), HF_HUB_OFFLINE="1",
                   PYTHONUNBUFFERED="1")
        if self.database_url:
            env["SERE_DATABASE_URL"] = self.database_url
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


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Debian Chromium through playwright; skips the test without either."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str):
    """A new browser context (its own cookies and storage: another user) showing the app."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.sere_errors = []
    page.on("pageerror", lambda exc: page.sere_errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("#sere-load-demo", timeout=60000)
    return page


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(300)


def open_project(page, name: str) -> None:
    """Choose a project in the "Your projects" list, as a user does."""
    page.click("#sere-project-dd input")
    page.get_by_role("option", name=name, exact=True).click()
    page.locator("#sere-project-line", has_text=name).wait_for(timeout=30000)


def label_panel(page) -> None:
    """Go to the labeling tab and wait for its first clip."""
    tab(page, "2 · Source clips")
    page.wait_for_selector(f"{CLIP_TITLE}:has-text('unlabeled left')", timeout=30000)


def clip_on_screen(page) -> str:
    """The file name of the clip in the labeling panel."""
    return page.inner_text(CLIP_TITLE).split(" ·")[0].strip()


def press_and_wait(page, key: str) -> str:
    """Press a labeling key (``1``-``9``, ``s``); returns the clip it applied to once the next is shown."""
    clip = clip_on_screen(page)
    page.keyboard.press(key)
    page.wait_for_function("([sel, t]) => !document.querySelector(sel).innerText.startsWith(t + ' ')",
                           arg=[CLIP_TITLE, clip], timeout=30000)
    return clip
