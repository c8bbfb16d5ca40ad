"""`fleet validate [PATH]`: state and deltas on disk against their schemas.

It reads the working tree (what you are about to commit), not main, and
reports every problem, one line each, naming the file and the rule.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from fleet import config as config_mod
from fleet.checks import check_file, touches_world, world_problems
from fleet.cli import dir_option, emit, json_option
from fleet.config import CONFIG_PATH
from fleet.errors import EXIT_FAILURE, FleetError
from fleet.git import toplevel
from fleet.progress import Progress


@dataclass
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate(root: Path, target: Path | None = None, bar: Progress | None = None) -> tuple[int, list[Problem]]:
    """(files checked, problems) for the fleet at ``root``, or only ``target``;
    ``bar`` is moved on a file at a time."""
    cfg = config_mod.parse((root / CONFIG_PATH).read_bytes()) if (root / CONFIG_PATH).is_file() else None
    if cfg is None:
        raise FleetError(f"{root / CONFIG_PATH}: missing; is this a fleet repository?")
    if target is None:
        files = sorted(p for p in (root / "state").rglob("*") if p.is_file())
        files += sorted(p for p in (root / "schemas").glob("*.json") if p.is_file())
        deltas = root / "deltas"
        if deltas.is_dir():
            files += sorted(p for p in deltas.rglob("*.json"))
    else:
        target = _resolve(root, target)
        if not target.exists():
            raise FleetError(f"{target}: no such file or directory")
        files = _walk(root, target) if target.is_dir() else [target]
    problems: list[Problem] = []
    if bar is not None:
        bar.total_is(len(files))
    for f in files:
        rel = _rel(root, f)
        if bar is not None:
            bar.advance(1, rel)
        problem = check_file(cfg, rel, f.read_bytes(), lambda p: _read_disk(root, p))
        if problem:
            problems.append(Problem(rel, problem))
    rels = [_rel(root, f) for f in files]
    if target is None or touches_world(rels):  # the world's tools and prompt, checked together
        problems += [Problem(path, message) for path, message in world_problems(cfg, lambda p: _read_disk(root, p))]
    return len(files), problems


def _rel(root: Path, f: Path) -> str:
    try:
        return f.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(f)


def _read_disk(root: Path, rel: str) -> bytes | None:
    return (root / rel).read_bytes() if (root / rel).is_file() else None


def _resolve(root: Path, target: Path) -> Path:
    """An absolute PATH; a relative one is taken from the current directory
    when that is inside the fleet, else from the fleet (as with ``-C DIR``)."""
    if target.is_absolute():
        return target.resolve()
    cwd, top = Path.cwd().resolve(), root.resolve()
    base = cwd if cwd == top or top in cwd.parents else top
    return (base / target).resolve()


def _walk(root: Path, folder: Path) -> list[Path]:
    """The files under ``folder`` that validate checks: in the fleet, state/,
    schemas/*.json and delta files; outside it (an inbox), every JSON file.
    Hidden folders (.git, .github) are never entered."""
    top = root.resolve()
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        try:
            rel = p.resolve().relative_to(top).parts
        except ValueError:
            if p.suffix == ".json" and not any(x.startswith(".") for x in p.relative_to(folder).parts):
                out.append(p)
            continue
        if any(x.startswith(".") for x in rel):
            continue
        if rel[0] == "state" or (rel[0] == "schemas" and len(rel) == 2 and p.suffix == ".json") or (
            "deltas" in rel[:-1] and p.suffix == ".json"
        ):
            out.append(p)
    return out


# -- the command line --------------------------------------------------------
@click.command("validate")
@dir_option
@json_option
@click.argument("path", required=False, type=click.Path(path_type=Path))
def validate_command(directory: Path, as_json: bool, path: Path | None) -> None:
    """Check state documents and delta files on disk against their schemas."""
    root = toplevel(directory)
    with Progress("validate", total=0, as_json=as_json) as bar:
        count, problems = validate(root, path, bar)

    def text() -> None:
        for p in problems:
            click.echo(str(p))
        click.echo(f"{count} file(s) checked, {len(problems)} problem(s)", err=bool(problems))

    emit({"checked": count, "problems": [p.__dict__ for p in problems]}, as_json, text)
    if problems:
        sys.exit(EXIT_FAILURE)
