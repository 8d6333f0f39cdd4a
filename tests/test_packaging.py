"""The promises the repository makes about itself: README commands, CI, Spaces requirements."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_spaces_requirements_match_pyproject() -> None:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    reqs = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert reqs == _pyproject()["project"]["dependencies"]


def test_ci_runs_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    first = [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.strip()]
    assert first == ["make setup", "make test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-2:] == first


def test_readme_has_spaces_front_matter_pointing_at_the_app() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    front = readme.split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert (ROOT / "app.py").exists()
    assert f"sdk_version: {_gradio_pin()}" in front


def _gradio_pin() -> str:
    for dep in _pyproject()["project"]["dependencies"]:
        if dep.startswith(("gradio==", "gradio[")):
            return dep.split("==")[1]
    raise AssertionError("gradio is not pinned in pyproject.toml")


def test_console_script_is_declared() -> None:
    assert _pyproject()["project"]["scripts"]["sere"] == "sere_core.cli:main"

