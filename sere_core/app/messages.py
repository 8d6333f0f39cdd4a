"""What a visitor reads when something goes wrong: their mistake in their words, never a server path."""

from __future__ import annotations

import re
from pathlib import Path

from sere_core.errors import SereError

#: An absolute path of two or more parts (``/tmp/sere-upload-x/a.wav``), not a relative one
#: (``happy/a.wav``), a ratio (``1/2``) or the path of a URL.
_SERVER_PATH = re.compile(r"(?<![\w.~/:-])/(?:[^\s/'\"`()<>|,;:]+/)+[^\s/'\"`()<>|,;:]*")


def without_paths(text: str) -> str:
    """``text`` with each absolute path cut to its file name: messages go to web visitors, who
    need the name of their file, not the server's folders (temporary, data or upload).

    >>> without_paths("cannot read /tmp/up/abc/a.wav; see happy/b.wav")
    'cannot read a.wav; see happy/b.wav'
    """
    return _SERVER_PATH.sub(lambda m: Path(m.group(0)).name or "…", text)


def user_message(exc: BaseException) -> str:
    """The text to show for an error: a ``SereError`` says it itself; anything else is a bug."""
    if isinstance(exc, SereError):
        return without_paths(str(exc))
    return f"Something went wrong ({type(exc).__name__}). The details are in the server log."


def plural(n: int, word: str, words: str | None = None) -> str:
    """``"1 clip"``, ``"3 clips"``.

    >>> plural(1, "clip"), plural(2, "file")
    ('1 clip', '2 files')
    """
    return f"{n:,} {word if n == 1 else (words or word + 's')}"
