"""The order one labeler goes through the unlabeled clips, as a small immutable value.

Each browser tab keeps its own :class:`LabelQueue`; labels themselves live in the database.
Pure: no storage, no Gradio.

>>> q = LabelQueue().suggest([7, 3, 5])
>>> q.next([3, 5, 7, 9])
7
>>> q.skip(7).next([3, 5, 7, 9])         # skipped clips come last
3
>>> q.next([3, 5, 7, 9], busy={7, 3})    # clips on another labeler's screen are passed over
5
>>> q.skip(7).bring_back(7).next([3, 5, 7, 9])   # an undone clip comes first again
7
>>> q.showing(5).next([3, 5, 7, 9])      # the clip on screen stays until it is labeled or skipped
5
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class LabelQueue:
    """``order``: the suggested clips, first to last (the others follow by id); ``skipped``: the
    clips skipped, oldest first, which come after every other; ``current``: the clip on screen."""

    order: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()
    current: int | None = None

    def next(self, unlabeled: Iterable[int], busy: Collection[int] = ()) -> int | None:
        """The clip to show among ``unlabeled``: the one on screen while it is still unlabeled
        and not on another labeler's screen, else the first in order; one in ``busy`` only when
        all are."""
        unlabeled = list(unlabeled)
        if self.current is not None and self.current not in busy and self.current in set(unlabeled):
            return self.current
        rank = {c: i for i, c in enumerate(self.order)}
        skip = {c: i for i, c in enumerate(self.skipped)}
        ranked = sorted(unlabeled, key=lambda c: (c in skip, skip.get(c, 0), rank.get(c, len(rank)), c))
        free = [c for c in ranked if c not in busy]
        return (free or ranked or [None])[0]

    def skip(self, clip_id: int) -> LabelQueue:
        """Put ``clip_id`` behind every other clip (the newest skip last)."""
        return LabelQueue(self.order, (*(c for c in self.skipped if c != clip_id), int(clip_id)), None)

    def suggest(self, order: Iterable[int]) -> LabelQueue:
        """Follow ``order`` from now on; what was skipped comes back into it."""
        return LabelQueue(tuple(int(c) for c in order), ())

    def bring_back(self, clip_id: int) -> LabelQueue:
        """Show ``clip_id`` now (its label was just undone)."""
        clip_id = int(clip_id)
        return LabelQueue(self.order, tuple(c for c in self.skipped if c != clip_id), clip_id)

    def showing(self, clip_id: int | None) -> LabelQueue:
        """The same queue, with ``clip_id`` on screen."""
        return LabelQueue(self.order, self.skipped, clip_id)
