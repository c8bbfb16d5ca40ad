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
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from fleet import config as config_mod
from fleet.checks import check_file, touches_world, world_report
from fleet.cli import dir_option, emit, json_option
from fleet.config import CONFIG_PATH
from fleet.errors import EXIT_FAILURE, FleetError
from fleet.git import toplevel
from fleet.ids import device_name, printable_lines
from fleet.progress import Progress
from fleet.repo import (  # the merge's own rules for an inbox
    in_layout,
    inbox_arrivals,
    inbox_entries,
    kind_of,
    read_regular,
)

# A file bigger than GitHub takes (100 MiB) is no fleet file: said, not read whole.
MAX_FILE_BYTES = 100 * 1048576


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class _File:
    rel: str  # its path in the fleet (outside it, as given)
    path: str
    refused: str | None = None  # known from the directory read (a link, a FIFO, a folder not listed): never read
    layout: str | None = None  # a file of an inbox: its path as the merge names it (deltas/<worker>/<stream>/<id>.json)


def validate(root: Path, target: Path | None = None,
             bar: Progress | None = None) -> tuple[int, list[Problem], list[Problem]]:
    """(files checked, problems, warnings) for the fleet at ``root``, or only
    ``target``; ``bar`` is moved on a file at a time."""
    root = root.resolve()
    data = read_regular(str(root / CONFIG_PATH), MAX_FILE_BYTES)
    if data is None:
        raise FleetError(f"{root / CONFIG_PATH}: missing; is this a fleet repository?")
    if not isinstance(data, bytes):  # a folder, a link, a FIFO, too big: what it is, not "missing"
        why = data if isinstance(data, str) else f"{data[1]} bytes, more than a fleet file may hold"
        raise FleetError(f"{root / CONFIG_PATH}: {why.replace('only regular files in the inbox are read', 'fleet reads only regular files')}")
    cfg = config_mod.parse(data)
    if target is None:
        files = _walk(root, "state", lambda parts: True)
        files += _walk(root, "schemas", lambda parts: len(parts) == 2 and parts[1].endswith(".json"))
        files += _walk(root, "deltas", lambda parts: parts[-1].endswith(".json"))
    else:
        target = _resolve(root, target)
        try:
            is_dir, exists = target.is_dir(), target.exists()
        except OSError as e:
            raise FleetError(f"{target}: cannot be read: {e.strerror}") from None
        if not exists:
            raise FleetError(f"{target}: no such file or directory")
        if is_dir:
            _refuse_precious(root, target)
            files = _walk_target(root, target)
            if not files:
                raise FleetError(f"{target}: nothing to check: no state document, schema or delta file under it "
                                 "(PATH is a fleet, a file or folder of one, or a folder of delta files)")
        else:
            files = [_File(_rel(root, target), str(target))]
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
        if f.refused:
            problems.append(Problem(f.rel, f.refused))
            continue
        data = read_regular(f.path, MAX_FILE_BYTES)  # never blocks on a FIFO, never reads a device
        if data is None:
            continue  # gone since the listing
        if isinstance(data, tuple):
            problems.append(Problem(f.rel, f"{data[1]} bytes, more than a fleet file may hold "
                                           f"({MAX_FILE_BYTES} bytes, GitHub's limit for a file)"))
            continue
        if isinstance(data, str):
            problems.append(Problem(f.rel, data.replace("only regular files in the inbox are read",
                                                        "fleet reads only regular files")))
            continue
        problem = check_file(cfg, f.layout or f.rel, data, read)
        if problem:
            problems.append(Problem(f.rel, problem))
    warned: list[Problem] = []
    if target is None or touches_world([f.rel for f in files]):  # the world's tools and prompt, checked together
        found, warnings = world_report(cfg, lambda p: _read_disk(root, p))
        problems += [Problem(path, message) for path, message in found]
        warned += [Problem(path, message) for path, message in warnings]
        from fleet.tools import declaration_problems  # (as fleet.world, only when needed)
        from fleet.world import signers_problems  # (fleet.world loads the schema library: only when needed)

        # tools no call can make valid: a fixed value the collection refuses, input bounds no value meets
        problems += [Problem(path, message) for path, message in declaration_problems(cfg, lambda p: _read_disk(root, p))]
        problems += [Problem(path, message)
                     for path, message in signers_problems(cfg, lambda p: _read_disk(root, p), lambda p: _kind(root, p))]
    unique = list(dict.fromkeys(problems))  # a file the world and the documents both read: said once
    return len(files), unique, warned + portability([f.rel for f in files if f.rel.startswith("state/")])


# Names Windows keeps for devices, whatever the extension: a checkout there fails on them.
def portability(rels: list[str]) -> list[Problem]:
    """State files that a clone on Windows or macOS cannot hold as they are: a name
    Windows keeps for a device (``CON.json``), and names in one folder that differ
    only by case (``Ada.json``, ``ada.json``: one file on a case-insensitive disk).
    Warnings, not problems: git and the merge take them, and changing what the merge
    accepts would change how old deltas replay."""
    out: list[Problem] = []
    seen: dict[str, str] = {}
    for rel in sorted(rels):
        name = rel.rsplit("/", 1)[-1]
        if device_name(name):
            out.append(Problem(rel, f"'{name.split('.', 1)[0]}' is a device name on Windows: a clone there cannot "
                                    "check this file out"))
        folded = rel.casefold()
        if folded in seen:
            out.append(Problem(rel, f"differs from {seen[folded]} only by case: a clone on Windows or macOS "
                                    "holds one file for both"))
        else:
            seen[folded] = rel
    return out


def _rel(root: Path, f: Path) -> str:
    try:
        return f.relative_to(root).as_posix()
    except ValueError:
        return str(f)


def _read_disk(root: Path, rel: str) -> bytes | None:
    """A schema or declaration file as the world reads it: a regular file, never
    where a link points (the link is a problem of its own), at most a fleet file's size."""
    data = read_regular(str(root / rel), MAX_FILE_BYTES)
    return data if isinstance(data, bytes) else None


def _kind(root: Path, rel: str) -> str | None:
    """What is at ``rel`` when it is not a file fleet reads ("is a folder, not a
    regular file"), or None if nothing is."""
    try:
        mode = os.lstat(root / rel).st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return f"is {kind_of(mode)}, not a regular file"
    return f"cannot be read, or holds more than {MAX_FILE_BYTES} bytes"


def _resolve(root: Path, target: Path) -> Path:
    """An absolute PATH; a relative one is taken from the current directory
    when that is inside the fleet, else from the fleet (as with ``-C DIR``)."""
    try:
        if target.is_absolute():
            return target.resolve()
        cwd, top = Path.cwd().resolve(), root.resolve()
        base = cwd if cwd == top or top in cwd.parents else top
        return (base / target).resolve()
    except RuntimeError:  # (Python 3.11 names a loop of links so)
        raise FleetError(f"{target}: a loop of symbolic links; name a file or folder") from None
    except OSError as e:
        raise FleetError(f"{target}: cannot be read: {e.strerror}") from None


def _refuse_precious(root: Path, folder: Path) -> None:
    """A folder outside the fleet is checked as an inbox of delta files; one that
    holds your home folder or a git repository (``/``, ``~``, a projects folder)
    is no inbox, and walking it would read the whole disk."""
    if folder == root or root in folder.parents:
        return
    home = Path.home().resolve()
    for precious, what in ((home, "your home folder"), (root, "this fleet")):
        if folder == precious or folder in precious.parents:
            raise FleetError(f"{folder}: holds {what}; PATH is a fleet, a file or folder of one, "
                             "or a folder of delta files")
    if (folder / ".git").exists():
        raise FleetError(f"{folder}: a git repository that is not a fleet (no {CONFIG_PATH}); PATH is a fleet, "
                         "a file or folder of one, or a folder of delta files")


LINK = "a symbolic link: fleet reads files, never where a link points"
_Entry = tuple[tuple[str, ...], str, str | None]  # (parts below the folder walked, path, why it is not read)


def _files(folder: Path, hidden: bool = False, depth: int | None = None) -> list[_Entry]:
    """Every file under ``folder`` as (parts below ``folder``, path, why it is not
    read or None), in sorted order. A link (to a folder too) is listed as a file,
    never followed, so that it is reported; so is a folder that cannot be listed
    and, with ``depth``, one nested deeper. Hidden folders (.git, .github) are
    entered only with ``hidden``. One directory read per folder: no stat and no
    path resolution per file."""
    out: list[_Entry] = []
    todo: list[tuple[tuple[str, ...], str]] = [((), str(folder))]
    while todo:
        below, here = todo.pop()
        try:
            entries = list(os.scandir(here))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            out.append((below or (".",), here, f"a folder that cannot be listed: {e.strerror}"))
            continue
        for e in entries:
            parts = (*below, e.name)
            try:
                is_dir = e.is_dir(follow_symlinks=False)
                link = not is_dir and e.is_symlink()
            except OSError as err:
                out.append((parts, e.path, f"cannot be read: {err.strerror}"))
                continue
            if is_dir:
                if depth is not None and len(parts) >= depth:
                    out.append((parts, e.path, f"folders nest deeper than {depth} levels; not walked"))
                elif hidden or not e.name.startswith("."):
                    todo.append((parts, e.path))
            else:
                out.append((parts, e.path, LINK if link else None))
    out.sort()
    return out


def _walk(root: Path, top: str, keep: Callable[[tuple[str, ...]], bool]) -> list[_File]:
    """The files of the fleet's ``top`` folder that ``keep`` takes (given their parts
    from the fleet's root)."""
    return [_File("/".join((top, *parts)), path, why) for parts, path, why in _files(root / top, top == "state")
            if keep((top, *parts))]


def _walk_target(root: Path, folder: Path) -> list[_File]:
    """The files under ``folder`` that validate checks: in the fleet, state/,
    schemas/*.json and delta files; outside it (an inbox), every JSON file, as
    deep as an inbox is walked, each where ``fleet merge --inbox`` puts it
    (``<worker>/<stream>/<id>.json`` or ``deltas/<worker>/...``: fleet.repo)."""
    try:
        prefix = folder.relative_to(root).parts
    except ValueError:  # an inbox: walked by the merge's own rule, so what it would quarantine is named here
        inbox_arrivals(folder, 1 << 20, said=str(folder))  # a folder that is no inbox (none of its files a delta): one line, as the merge says
        return [_File(str(e.path), str(e.path), e.refused, in_layout(e.rel)) for e in inbox_entries(folder)
                if not e.foreign or e.rel.endswith(".json")]
    out = []
    for parts, path, why in _files(folder):
        rel = (*prefix, *parts)
        if any(x.startswith(".") for x in rel):
            continue
        json_file = rel[-1].endswith(".json")
        if rel[0] == "state" or (rel[0] == "schemas" and len(rel) == 2 and json_file) or (
            "deltas" in rel[:-1] and json_file
        ):
            out.append(_File("/".join(rel), path, why))
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
        count, problems, warnings = validate(root, path, bar)

    def text() -> None:
        for p in problems:
            click.echo(printable_lines(str(p)))  # (click drops an escape sequence off a terminal)
        for w in warnings:
            click.echo(printable_lines(f"warning: {w}"), err=True)
        click.echo(f"{count} file(s) checked, {len(problems)} problem(s)", err=bool(problems))

    emit({"checked": count, "problems": [p.__dict__ for p in problems], "warnings": [w.__dict__ for w in warnings]},
         as_json, text)
    if problems:
        sys.exit(EXIT_FAILURE)
