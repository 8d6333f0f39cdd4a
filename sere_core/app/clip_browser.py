"""The clip browser: every clip of a project, source and target, a page at a time, filtered,
searched and sorted by the database, so a 100,000-clip project sends one page
(``benchmarks/scale.py`` measures it). Before the first training it lists the clips without
predictions."""

from __future__ import annotations

from dataclasses import dataclass, field

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.review import page_of

#: Rows per page of the browser.
PAGE_SIZE = 50
#: The browser's orders: (what the database sorts by, descending).
ORDERS = {
    "file name": ("name", False),
    "least confident first": ("confidence", False),
    "most confident first": ("confidence", True),
    "predicted emotion": ("emotion", False),
}
#: The "labeled" filter's choices and what they keep.
LABELED = {"any": None, "labeled": True, "not labeled": False}


@dataclass(frozen=True)
class BrowserPage:
    """One page of the browser; ``facets`` are the languages and speakers the filters offer."""

    rows: list[st.PredictionRow]
    page: int
    pages: int
    total: int
    run_id: int | None
    facets: dict[str, list[str]] = field(default_factory=dict)

    def caption(self) -> str:
        if not self.total:
            return "No clip matches."
        first = (self.page - 1) * PAGE_SIZE + 1
        return f"Clips {first}-{first + len(self.rows) - 1} of {self.total} · page {self.page} of {self.pages}"


def clip_filter(role: str | None = None, language: str | None = None, predicted: str | None = None,
                labeled: str | None = None, speaker: str | None = None, min_confidence: float | None = None,
                max_confidence: float | None = None, name: str | None = None) -> st.ClipFilter:
    """The filter the browser's controls describe ("any" or empty: no filter; confidences in %)."""
    def chosen(value: str | None) -> str | None:
        return None if value in (None, "", "any") else str(value)

    def fraction(percent: float | None) -> float | None:
        return None if percent in (None, "") else float(percent) / 100.0

    return st.ClipFilter(role=chosen(role), language=chosen(language), speaker=chosen(speaker),
                         predicted=chosen(predicted), labeled=LABELED.get(str(labeled or "any")),
                         min_confidence=fraction(min_confidence), max_confidence=fraction(max_confidence),
                         name=(name or "").strip() or None)


def browse(ctx: AppContext, caller: Caller, project_id: int, where: st.ClipFilter | None = None,
           order: str = "file name", page: int = 1) -> BrowserPage:
    """Page ``page`` of the project's clips that ``where`` keeps, with the latest run's predictions."""
    by, descending = ORDERS.get(order, ORDERS["file name"])
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        run_id = st.latest_result(s, project.id)
        rows, page, pages, total = page_of(s, project.id, run_id, order=by, descending=descending, page=page,
                                           size=PAGE_SIZE, where=where)
        return BrowserPage(rows, page, pages, total, run_id, st.clip_facets(s, project.id))
