"""A user's mistake is a message and one log line; a bug is logged once, with its traceback.

Gradio prints the traceback of every exception a handler raises unless told otherwise, so
without ``friendly`` a user typing an empty project name filled the log with ~50 lines.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import gradio as gr
import pytest

from sere_core.app import AppContext, AppSettings
from sere_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _app_module():
    spec = importlib.util.spec_from_file_location("sere_app_logging", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = _app_module()


def test_a_user_mistake_logs_one_line_and_no_traceback(caplog):
    @app.friendly
    def handler():
        raise ConfigError("the project name is empty; please type a name")

    with caplog.at_level(logging.INFO, logger="sere_studio"), pytest.raises(gr.Error) as caught:
        handler()
    assert caught.value.message == "the project name is empty; please type a name"
    assert caught.value.print_exception is False  # Gradio prints no traceback either
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]


def test_a_gr_error_raised_by_a_handler_is_not_printed_either(caplog):
    @app.friendly
    def handler():
        raise gr.Error("Open a project first.")

    with caplog.at_level(logging.INFO, logger="sere_studio"), pytest.raises(gr.Error) as caught:
        handler()
    assert caught.value.print_exception is False
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None


def test_a_bug_is_logged_once_with_its_traceback(caplog):
    @app.friendly
    def handler():
        raise KeyError("boom")

    with caplog.at_level(logging.INFO, logger="sere_studio"), pytest.raises(gr.Error) as caught:
        handler()
    assert "details are in the server log" in caught.value.message
    assert caught.value.print_exception is False  # logged by us, so not printed again by Gradio
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None


@pytest.mark.slow
def test_the_running_app_prints_no_traceback_for_a_user_mistake(tmp_path, capfd):
    """Through the real server and queue: an empty project name comes back as the message."""
    from gradio_client import Client

    ctx = AppContext.open(AppSettings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"))
    demo = app.build_app(ctx)
    try:
        demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            **app.launch_options(ctx))
        client = Client(demo.local_url, verbose=False)
        with pytest.raises(Exception, match="name"):
            client.predict("   ", "angry, happy, neutral, sad", api_name="/create")
    finally:
        demo.close()
        ctx.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
