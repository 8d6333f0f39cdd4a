"""The server's secret: made once, kept across restarts, never what a browser sees."""

from __future__ import annotations

import stat

import pytest

from sere_core.app import AppContext, AppSettings
from sere_core.app.secret_key import FILE_NAME, server_secret
from sere_core.errors import ConfigError


def test_the_secret_is_created_once_private_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("SERE_SECRET", raising=False)
    first = server_secret(tmp_path)
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 64
    assert server_secret(tmp_path) == first  # a restart reads the same key
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left


def test_sere_secret_wins_and_must_be_long_enough(tmp_path, monkeypatch):
    monkeypatch.setenv("SERE_SECRET", "correct horse battery staple")
    assert server_secret(tmp_path) == b"correct horse battery staple"
    assert not (tmp_path / FILE_NAME).exists()
    monkeypatch.setenv("SERE_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        server_secret(tmp_path)


def test_the_browser_state_key_is_fixed_and_derived(tmp_path, monkeypatch):
    monkeypatch.delenv("SERE_SECRET", raising=False)
    settings = AppSettings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", encoder="prosody")
    keys = []
    for _ in range(2):  # two starts of the app on one data folder
        ctx = AppContext.open(settings)
        keys.append(ctx.browser_state_secret())
        ctx.close()
    assert keys[0] == keys[1] and len(keys[0]) == 32
    assert keys[0].encode() not in server_secret(settings.data_dir)  # the page never sees the secret
