"""The SERE Studio app's logic, without the page: one module per job, over the database and the
worker pool. ``app.py`` builds the Gradio page and calls these; tests call them directly.

* ``context`` - settings and the shared resources of one process (:class:`AppContext`);
* ``access`` - who is calling: visitor tokens, workspaces, labelers (:class:`Caller`);
* ``projects`` - projects and workspaces: create, rename, delete, limits, expiry;
* ``demo`` - each workspace's own copy of the demo;
* ``imports`` - audio files, archives, manifests and labels CSVs into a project;
* ``labeling`` and ``label_queue`` - labels on the clip on screen, per-labeler undo, the next clip;
* ``training`` and ``jobs`` - runs in a bounded worker pool; ``pipeline`` - the run itself;
* ``review`` - clip views, the resonance field, the review table, confirmations;
* ``exports`` - predictions, labels and the model as files;
* ``views`` - one view per screen; ``figures`` - plots and HTML for the page.

>>> from sere_core.app.projects import parse_emotions
>>> parse_emotions("neutral, happy, sad, angry")
['neutral', 'happy', 'sad', 'angry']
"""

from sere_core.app.access import Caller
from sere_core.app.context import AppContext, AppSettings, WorkspaceLimits

__all__ = ["AppContext", "AppSettings", "Caller", "WorkspaceLimits"]
