"""`fleet validate [PATH]`: state and deltas on disk against their schemas.

PATH is a fleet (a folder with state/config.json: checked whole, as with
``-C PATH``), a file or folder of this fleet, or a folder of delta files (an
inbox: every ``*.json`` under it is a delta). A PATH with nothing to check is
an error, not "0 problems".

It reads the working tree (what you are about to commit), not main, and
reports every problem, one line each, naming the file and the rule.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
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


@dataclass(frozen=True)
class _File:
    rel: str  # its path in the fleet (outside it, as given)
    path: str
    link: bool  # known from the directory read: a link is reported, never followed


def validate(root: Path, target: Path | None = None, bar: Progress | None = None) -> tuple[int, list[Problem]]:
    """(files checked, problems) for the fleet at ``root``, or only ``target``;
    ``bar`` is moved on a file at a time."""
    root = root.resolve()
    cfg = config_mod.parse((root / CONFIG_PATH).read_bytes()) if (root / CONFIG_PATH).is_file() else None
    if cfg is None:
        raise FleetError(f"{root / CONFIG_PATH}: missing; is this a fleet repository?")
    if target is None:
        files = _walk(root, "state", lambda parts: True)
        files += _walk(root, "schemas", lambda parts: len(parts) == 2 and parts[1].endswith(".json"))
        files += _walk(root, "deltas", lambda parts: parts[-1].endswith(".json"))
    else:
        target = _resolve(root, target)
        if not target.exists():
            raise FleetError(f"{target}: no such file or directory")
        if target.is_dir():
            files = _walk_target(root, target)
            if not files:
                raise FleetError(f"{target}: nothing to check: no state document, schema or delta file under it "
                                 "(PATH is a fleet, a file or folder of one, or a folder of delta files)")
        else:
            files = [_File(_rel(root, target), str(target), False)]
    problems: list[Problem] = []
    schema_files: dict[str, bytes | None] = {}  # the world's schemas, read once, not once per document

    def read(rel: str) -> bytes | None:
        if rel not in schema_files:
            schema_files[rel] = _read_disk(root, rel)
        return schema_files[rel]

    if bar is not None:
        bar.total_is(len(files))
    for f in files:
        if bar is not None:
            bar.advance(1, f.rel)
        if f.link:
            problems.append(Problem(f.rel, "a symbolic link: fleet reads files, never where a link points"))
            continue
        with open(f.path, "rb") as fh:
            data = fh.read()
        problem = check_file(cfg, f.rel, data, read)
        if problem:
            problems.append(Problem(f.rel, problem))
    if target is None or touches_world([f.rel for f in files]):  # the world's tools and prompt, checked together
        problems += [Problem(path, message) for path, message in world_problems(cfg, lambda p: _read_disk(root, p))]
    return len(files), problems


def _rel(root: Path, f: Path) -> str:
    try:
        return f.relative_to(root).as_posix()
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


def _files(folder: Path, hidden: bool = False) -> list[tuple[tuple[str, ...], str, bool]]:
    """Every file under ``folder`` as (parts below ``folder``, path, is a link), in
    sorted order, and every link as a file (never followed, a link to a folder
    included, so that it is reported); hidden folders (.git, .github) are entered
    only with ``hidden``. One directory read per folder: no stat and no path
    resolution per file."""
    out: list[tuple[tuple[str, ...], str, bool]] = []
    todo: list[tuple[tuple[str, ...], str]] = [((), str(folder))]
    while todo:
        below, here = todo.pop()
        try:
            entries = list(os.scandir(here))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if hidden or not e.name.startswith("."):
                    todo.append(((*below, e.name), e.path))
            else:
                out.append(((*below, e.name), e.path, e.is_symlink()))
    out.sort()
    return out


def _walk(root: Path, top: str, keep: Callable[[tuple[str, ...]], bool]) -> list[_File]:
    """The files of the fleet's ``top`` folder that ``keep`` takes (given their parts
    from the fleet's root)."""
    return [_File("/".join((top, *parts)), path, link) for parts, path, link in _files(root / top, top == "state")
            if keep((top, *parts))]


def _walk_target(root: Path, folder: Path) -> list[_File]:
    """The files under ``folder`` that validate checks: in the fleet, state/,
    schemas/*.json and delta files; outside it (an inbox), every JSON file."""
    try:
        prefix = folder.relative_to(root).parts
    except ValueError:
        return [_File(path, path, link) for parts, path, link in _files(folder) if parts[-1].endswith(".json")]
    out = []
    for parts, path, link in _files(folder):
        rel = (*prefix, *parts)
        if any(x.startswith(".") for x in rel):
            continue
        json_file = rel[-1].endswith(".json")
        if rel[0] == "state" or (rel[0] == "schemas" and len(rel) == 2 and json_file) or (
            "deltas" in rel[:-1] and json_file
        ):
            out.append(_File("/".join(rel), path, link))
    return out


# -- the command line --------------------------------------------------------
@click.command("validate")
@dir_option
@json_option
@click.argument("path", required=False, type=click.Path(path_type=Path))
def validate_command(directory: Path, as_json: bool, path: Path | None) -> None:
    """Check state documents and delta files on disk against their schemas."""
    if path is not None and (path / CONFIG_PATH).is_file():  # PATH is a fleet: validated as `fleet -C PATH validate`
        root, path = path, None
    else:
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
