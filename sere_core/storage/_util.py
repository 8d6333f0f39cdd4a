"""Small helpers shared by the data functions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidDataError


def json_safe(value: Any, field: str) -> Any:
    """Plain JSON values: numpy scalars/arrays become Python numbers/lists, NaN/inf become None.

    PostgreSQL's JSON types reject NaN, and a diverging loss must not make a progress update fail.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, field) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, field) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalar or array, without importing numpy
    if callable(tolist):
        return json_safe(tolist(), field)
    raise InvalidDataError(f"{field}: {type(value).__name__} values cannot be stored as JSON.")


def finite_float(value: Any, field: str, *, minimum: float | None = None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidDataError(f"{field} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise InvalidDataError(f"{field} must be a finite number, got {value!r}.")
    if minimum is not None and number < minimum:
        raise InvalidDataError(f"{field} must be at least {minimum}, got {number}.")
    return number


def clean_text(value: Any, field: str, *, max_len: int, required: bool = True) -> str | None:
    if value is None:
        if required:
            raise InvalidDataError(f"{field} is required.")
        return None
    if not isinstance(value, str):
        raise InvalidDataError(f"{field} must be text, got {type(value).__name__}.")
    text = value.strip()
    if not text:
        if required:
            raise InvalidDataError(f"{field} must not be empty.")
        return None
    if "\x00" in text:
        raise InvalidDataError(f"{field} must not contain NUL characters.")
    if len(text) > max_len:
        raise InvalidDataError(f"{field} is longer than {max_len} characters.")
    return text
