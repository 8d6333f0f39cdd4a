"""The server's secret key, and the keys derived from it for one purpose each.

``$SERE_SECRET`` when set (several servers behind one address must share it), else a random key
created once in the data folder, so that what it protects survives a restart: a visitor's open
project, kept in the browser, is still readable after the app (or its container) restarts. The key
itself never leaves the server; a browser only ever sees a key derived from it for one purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from sere_core.errors import ConfigError

ENV_VAR = "SERE_SECRET"
FILE_NAME = "secret.key"
_MIN_CHARS = 16


def server_secret(data_dir: Path) -> bytes:
    """``$SERE_SECRET``, else the key in ``data_dir/secret.key`` (created on first use, mode 600)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        if len(env) < _MIN_CHARS:
            raise ConfigError(f"${ENV_VAR} must be at least {_MIN_CHARS} characters long.")
        return env.encode("utf-8")
    path = Path(data_dir) / FILE_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=path.parent)  # mode 600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_hex(32).encode("ascii"))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)  # publishes the whole file, and never over another process's key
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    key = path.read_bytes().strip()
    if len(key) < 2 * _MIN_CHARS:
        raise ConfigError(f"{path} is damaged; delete it and restart (a new key is then made).")
    return key


def derived_key(secret: bytes, purpose: str) -> str:
    """A key for one ``purpose`` (hex): knowing it reveals neither ``secret`` nor another purpose's.

    >>> derived_key(b"k" * 32, "a") == derived_key(b"k" * 32, "a") != derived_key(b"k" * 32, "b")
    True
    """
    return hmac.new(secret, purpose.encode("utf-8"), hashlib.sha256).hexdigest()
