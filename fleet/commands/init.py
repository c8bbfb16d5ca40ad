"""`fleet init DIR`: a new fleet repository with the example world."""

from __future__ import annotations

import shutil
from pathlib import Path

from fleet.errors import FleetError
from fleet.git import Git
from fleet.template import root

COPIED = ("state", "schemas", ".github/workflows", "action.yml", "pyproject.toml")
README = """# {name}

A fleet of LLM agents run by fleet (its source is in `fleet/`): the
world is `state/`, its rules are `state/config.json` and `schemas/`, and
`main` is written only by `fleet merge`.

    fleet status      # tick, conflicts, cost
    fleet merge       # apply pending deltas
    fleet log         # who changed what
"""


def init(directory: Path) -> str:
    """Create the repository; return the genesis commit.

    All or nothing: if any step fails, what this call made is removed again, so
    the same command can simply be run again once the cause is fixed.
    """
    if directory.exists() and any(directory.iterdir()):
        raise FleetError(f"{directory}: already exists and is not empty; choose a new directory")
    existed = directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _populate(directory)
    except BaseException as e:
        if existed:
            for child in directory.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        else:
            shutil.rmtree(directory, ignore_errors=True)
        if isinstance(e, FleetError):
            raise FleetError(f"{directory}: could not create the fleet repository ({e}); nothing was left behind") from None
        if isinstance(e, OSError):
            raise FleetError(f"{directory}: could not create the fleet repository: {e.strerror or e}") from None
        raise


def _populate(directory: Path) -> str:
    src = root()
    for rel in COPIED:
        s, d = src / rel, directory / rel
        if s.is_dir():
            # ci.yml tests this package, not a fleet; a new fleet starts with no ledger or conflicts
            shutil.copytree(s, d, ignore=shutil.ignore_patterns("__pycache__", "ledger", "quarantine", "conflicts",
                                                                 "resolutions", "ci.yml"))
        elif s.is_file():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    # fleet's own source, so that the workflows' `uses: ./` installs the very
    # version that made the fleet, with no registry and no OWNER/REPO to guess
    shutil.copytree(Path(__file__).resolve().parent.parent, directory / "fleet",
                    ignore=shutil.ignore_patterns("__pycache__", "_template", "*.pyc"))
    (directory / "README.md").write_text(README.format(name=directory.resolve().name))
    (directory / ".gitignore").write_text("deltas/\n__pycache__/\n")
    git = Git(directory)
    git.run("init", "--quiet", "--initial-branch=main")
    git.run("add", "--all")
    # fleet's own commit, like every commit the merge engine writes: its identity,
    # unsigned, and no user hooks (they belong to the user's own commits)
    git.run(
        "-c", "user.name=fleet", "-c", "user.email=fleet@localhost", "-c", "commit.gpgsign=false",
        "commit", "--quiet", "--no-verify", "-m", "fleet: genesis (tick 0)\n\nThe example world, its schemas and config.",
    )
    return git.text("rev-parse", "HEAD")
