"""Short leases on the clips shown for labeling, so that two tabs or two labelers of one project
are shown different clips.

A holder (a browser tab) holds at most one clip per project; showing it another releases the
first. Leases expire on their own (a closed tab holds nothing for long) and only steer which clip
is shown next: a label is never refused because someone else holds the clip. The caller takes
them under the project lock (``owned_project(..., lock=True)``), so two tabs asking at the same
moment are served one after the other.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .models import ClipLease, utcnow

#: How long a clip stays reserved for the screen showing it, in seconds.
LEASE_S = 120.0


def leased_by_others(session: Session, project_id: int, holder: str, now: datetime | None = None) -> set[int]:
    """Clips of the project that another holder's unexpired lease keeps."""
    now = now or utcnow()
    return set(session.scalars(select(ClipLease.clip_id).where(
        ClipLease.project_id == project_id, ClipLease.holder != holder, ClipLease.expires_at > now)))


def take_lease(session: Session, project_id: int, clip_id: int, holder: str, *,
               now: datetime | None = None, seconds: float = LEASE_S) -> None:
    """Hold ``clip_id`` for ``holder`` for ``seconds``, releasing what ``holder`` held in the project."""
    now = now or utcnow()
    session.execute(delete(ClipLease).where(ClipLease.project_id == project_id, ClipLease.holder == holder,
                                            ClipLease.clip_id != clip_id))
    lease = session.get(ClipLease, clip_id, populate_existing=True)
    if lease is None:
        session.add(ClipLease(clip_id=clip_id, project_id=project_id, holder=holder,
                              expires_at=now + timedelta(seconds=seconds)))
    else:
        lease.holder, lease.expires_at = holder, now + timedelta(seconds=seconds)
    session.flush()


def release_leases(session: Session, holder: str, project_id: int | None = None) -> None:
    """Release what ``holder`` holds (in one project, or everywhere)."""
    query = delete(ClipLease).where(ClipLease.holder == holder)
    if project_id is not None:
        query = query.where(ClipLease.project_id == project_id)
    session.execute(query)
