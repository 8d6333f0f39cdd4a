"""A process killed with SIGKILL mid-transaction loses nothing it committed and leaves nothing half-done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import db_url, postgres_admin_url, postgres_url  # noqa: E402,F401  (fixtures)

from sere_core.storage import (
    SHARED_WORKSPACE,
    ensure_workspace,  # noqa: E402
    RunStatus,
    add_clip,
    create_project,
    create_run,
    get_label,
    get_run,
    label_history,
    mark_stale_runs_failed,
    open_database,
    session_scope,
)

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from sere_core.storage import open_database, session_factory, session_scope, set_label, start_run, update_progress

    url, first_clip, second_clip, run_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    factory = session_factory(open_database(url))
    with session_scope(factory) as s:          # transaction 1: committed
        set_label(s, first_clip, "happy", author="child")
        start_run(s, run_id, total_steps=100)
    s = factory()                              # transaction 2: killed before its commit
    set_label(s, second_clip, "sad", author="child")
    update_progress(s, run_id, step=50, losses={"tric": 0.3})
    s.flush()
    print("about to die", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_mid_transaction(db_url):
    engine = open_database(db_url)
    try:
        with session_scope(engine) as s:
            project = create_project(s, "crash", ["happy", "sad"], "prosody", workspace=ensure_workspace(s, SHARED_WORKSPACE, "shared").id)
            first, second = (
                add_clip(s, project.id, audio_id=c * 64, original_name=f"{c}.wav", duration_s=1.0, role="target").id
                for c in "ab"
            )
            run_id = create_run(s, project.id).id

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        url = engine.url.render_as_string(hide_password=False)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, url, str(first), str(second), str(run_id)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )
        assert "about to die" in proc.stdout, proc.stderr
        assert proc.returncode == -signal.SIGKILL
    finally:
        engine.dispose()

    engine = open_database(db_url)  # the restart
    try:
        with session_scope(engine) as s:
            assert get_label(s, first) == "happy"
            assert get_label(s, second) is None
            assert label_history(s, second) == []  # no half label: neither history nor current
            run = get_run(s, run_id)
            assert run.status is RunStatus.RUNNING and run.step == 0 and run.losses == []
            failed = mark_stale_runs_failed(s)  # the dead worker's pid gives it away at once
            assert [r.id for r in failed] == [run_id]
        with session_scope(engine) as s:
            run = get_run(s, run_id)
            assert run.status is RunStatus.FAILED
            assert "restarted during training" in run.error
    finally:
        engine.dispose()
