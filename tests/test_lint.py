"""fleet's own code passes its linters: ruff on the package and the tests, mypy
(strict) on the merge engine and the protocol's types. Both are configured in
pyproject.toml, so this test and a person at the prompt run the same checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    p = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "fleet", "tests"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_mypy_strict_finds_nothing(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy")], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
