"""Docstring examples are documentation that must stay true: run them."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sere_core

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(sere_core.__path__, "sere_core.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
