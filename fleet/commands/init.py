"""`fleet init DIR`: a new fleet repository with the example world."""

from __future__ import annotations

import shutil
from pathlib import Path

from fleet.errors import FleetError
from fleet.git import Git
from fleet.template import root

COPIED = ("state", "schemas", ".github/workflows", "action.yml")
README = """# {name}

A fleet of LLM agents run by [fleet](https://pypi.org/project/fleet/): the
world is `state/`, its rules are `state/config.json` and `schemas/`, and
`main` is written only by `fleet merge`.

    fleet status      # tick, conflicts, cost
    fleet merge       # apply pending deltas
    fleet log         # who changed what
"""


def init(directory: Path) -> str:
    """Create the repository; return the genesis commit."""
    if directory.exists() and any(directory.iterdir()):
        raise FleetError(f"{directory}: already exists and is not empty; choose a new directory")
    src = root()
    directory.mkdir(parents=True, exist_ok=True)
    for rel in COPIED:
        s, d = src / rel, directory / rel
        if s.is_dir():
            shutil.copytree(s, d, ignore=shutil.ignore_patterns("__pycache__", "ledger", "quarantine", "conflicts"))
        elif s.is_file():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    (directory / "README.md").write_text(README.format(name=directory.resolve().name))
    (directory / ".gitignore").write_text("deltas/\n")
    git = Git(directory)
    git.run("init", "--quiet", "--initial-branch=main")
    git.run("add", "--all")
    git.run(
        "-c", "user.name=fleet", "-c", "user.email=fleet@localhost",
        "commit", "--quiet", "-m", "fleet: genesis (tick 0)\n\nThe example world, its schemas and config.",
    )
    return git.text("rev-parse", "HEAD")
