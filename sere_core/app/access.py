"""Who is calling: the workspace a visitor owns and the labeler they are.

A browser gets a visitor token once (:func:`new_token`) and keeps it (``gr.BrowserState``): a
random id and the server's signature of it, so the server recognizes its own tokens after a
restart and refuses made-up ones. A visitor signed in with Hugging Face is known by their user
name instead. Every service function takes the resulting :class:`Caller` and reaches projects
only through its workspace.

* ``single`` (a private server): one workspace, shared by everyone who can reach the server;
  each browser or user is still a labeler of its own, with its own undo.
* ``per-visitor`` (a public Space): a signed-in user owns the workspace of their user name, an
  anonymous visitor the workspace of their token, and no workspace can reach another's.

>>> from sere_core.app.context import PER_VISITOR
>>> token = new_token(b"k" * 32)
>>> caller = caller_for(PER_VISITOR, b"k" * 32, token)
>>> caller.workspace.startswith("anon:") and caller.labeler == caller.workspace
True
>>> caller_for(PER_VISITOR, b"k" * 32, token + "x") is None    # a token the server did not sign
True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sere_core.app.context import PER_VISITOR, SINGLE
from sere_core.app.secret_key import derived_key
from sere_core.storage import SHARED_WORKSPACE, WorkspaceKind

_TOKEN = re.compile(r"^([A-Za-z0-9_-]{24})\.([0-9a-f]{32})$")
#: What a Hugging Face user name may hold (their own rule is stricter).
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass(frozen=True)
class Caller:
    """The visitor behind a request.

    ``workspace`` is the key of the workspace they own; ``labeler`` names them in the label
    history (their undo walks back only their own changes); ``tab`` is the browser tab (Gradio
    session) that holds the clip on screen, empty outside a page.
    """

    workspace: str
    kind: WorkspaceKind
    labeler: str
    tab: str = ""
    username: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.username is None


def _signature(secret: bytes, token_id: str) -> str:
    key = derived_key(secret, "visitor token").encode("ascii")
    return hmac.new(key, token_id.encode("ascii"), hashlib.sha256).hexdigest()[:32]


def new_token(secret: bytes) -> str:
    """A fresh visitor token: 144 random bits and the server's signature of them."""
    token_id = secrets.token_urlsafe(18)
    return f"{token_id}.{_signature(secret, token_id)}"


def token_id(token: object, secret: bytes) -> str | None:
    """The id of a token this server signed; None for anything else."""
    match = _TOKEN.match(token) if isinstance(token, str) else None
    if match is None or not hmac.compare_digest(match.group(2), _signature(secret, match.group(1))):
        return None
    return match.group(1)


def caller_for(mode: str, secret: bytes, token: object, *, username: str | None = None,
               tab: str = "") -> Caller | None:
    """The caller with visitor ``token`` (and ``username``, when signed in) under ``mode``;
    None when neither identifies anyone (a made-up token and no user)."""
    if username is not None and not _USERNAME.match(str(username)):
        username = None
    tid = token_id(token, secret)
    if username is not None:
        labeler = f"user:{username}"
    elif tid is not None:
        # The workspace is named by a digest, never by the token: the id is the token's secret part.
        labeler = "anon:" + hashlib.sha256(tid.encode("ascii")).hexdigest()[:32]
    else:
        return None
    if mode == SINGLE:
        return Caller(SHARED_WORKSPACE, WorkspaceKind.SHARED, labeler, tab, username)
    if mode != PER_VISITOR:
        raise ValueError(f"unknown workspace mode {mode!r}")
    kind = WorkspaceKind.ANONYMOUS if username is None else WorkspaceKind.USER
    return Caller(labeler, kind, labeler, tab, username)
