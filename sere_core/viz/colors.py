"""Stable colours for emotions, so that "angry" is the same red in every plot and every session.

Common emotion names have fixed colours; other names (a user may call an emotion "Ärger" or
"irritated") take the next unused colour of a palette in the order the project lists them, which
is stable for a given project.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Fixed colours for the emotion names used by the corpora (colour-blind friendly where possible).
KNOWN_EMOTION_COLORS: dict[str, str] = {
    "neutral": "#7f8c8d",
    "calm": "#17becf",
    "happy": "#f0a30a",
    "sad": "#1f77b4",
    "angry": "#d62728",
    "fear": "#9467bd",
    "disgust": "#2ca02c",
    "surprise": "#e377c2",
    "boredom": "#8c564b",
}

#: Palette for emotion names that are not in ``KNOWN_EMOTION_COLORS``.
EXTRA_PALETTE: tuple[str, ...] = (
    "#bcbd22", "#ff7f0e", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
    "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
)

#: Colour for clips that have no emotion yet (before training, or skipped).
UNKNOWN_COLOR = "#c7c7c7"


def emotion_colors(emotions: Iterable[str]) -> dict[str, str]:
    """Map each emotion name to a colour; the same list always gives the same colours.

    >>> emotion_colors(["neutral", "happy", "Ärger"])["happy"]
    '#f0a30a'
    >>> emotion_colors(["Ärger", "Freude"]) == emotion_colors(["Ärger", "Freude"])
    True
    """
    names = list(dict.fromkeys(str(e) for e in emotions))
    colors: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        known = KNOWN_EMOTION_COLORS.get(name.strip().lower())
        if known is not None and known not in used:
            colors[name] = known
            used.add(known)
    free = [c for c in EXTRA_PALETTE if c not in used]
    i = 0
    for name in names:
        if name in colors:
            continue
        if i < len(free):
            colors[name] = free[i]
        else:  # more emotions than colours: cycle, still deterministic
            colors[name] = EXTRA_PALETTE[i % len(EXTRA_PALETTE)]
        i += 1
    return colors


#: Colours of categories that are not emotions (languages, speakers, "labeled or not"), in order.
CATEGORY_PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#393b79", "#637939", "#843c39",
)


def category_colors(names: Iterable[str]) -> dict[str, str]:
    """One colour per category in the order given (cycling after 12): ``de`` and ``it`` differ."""
    return {name: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)]
            for i, name in enumerate(dict.fromkeys(str(n) for n in names))}
