"""`fleet validate [PATH]`: state and deltas on disk against their schemas.

It reads the working tree (what you are about to commit), not main, and
reports every problem, one line each, naming the file and the rule.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from fleet import canonical, schemas
from fleet import config as config_mod
from fleet.cli import dir_option, emit, json_option
from fleet.config import CONFIG_PATH, FLEET_PATH, Config
from fleet.delta import Arrival, Rejected, parse
from fleet.errors import EXIT_FAILURE, FleetError
from fleet.git import toplevel
from fleet.resolve import RESOLUTION_DIR
from fleet.state import CONFLICT_DIR, ENGINE_DIRS, Snapshot


@dataclass
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate(root: Path, target: Path | None = None) -> tuple[int, list[Problem]]:
    """(files checked, problems) for the fleet at ``root``, or only ``target``."""
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
    for f in files:
        try:
            rel = f.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = str(f)
        problem = check_file(cfg, rel, f.read_bytes(), lambda p: _read_disk(root, p))
        if problem:
            problems.append(Problem(rel, problem))
    return len(files), problems


def _read_disk(root: Path, rel: str) -> bytes | None:
    return (root / rel).read_bytes() if (root / rel).is_file() else None


def check_in(snap: Snapshot, rel: str, data: bytes) -> str | None:
    """:func:`check_file` for a file of a commit: its schemas are the commit's
    own, so a person's commit and a worker's view of main are judged by the
    same rules as ``fleet validate`` on disk."""
    return check_file(snap.config, rel, data, snap.read)


def check_file(cfg: Config, rel: str, data: bytes, read: Callable[[str], bytes | None]) -> str | None:
    """Why the file ``rel`` with content ``data`` is not acceptable, or None.

    ``read`` gives the bytes of another file of the same fleet (the world's
    schemas), from disk or from a commit.
    """
    parts = rel.split("/")
    if parts[0] == "schemas" and len(parts) == 2:
        try:
            schemas.compile_schema(canonical.parse(data), rel)
        except canonical.JSONProblem as e:
            return str(e)
        except FleetError as e:
            return str(e).removeprefix(f"{rel}: ")
        return None
    if parts[0] != "state":  # a delta file: under deltas/, in an inbox folder, or named on the command line
        i = parts.index("deltas") if "deltas" in parts else 0
        try:
            parse(Arrival("disk", "/".join(parts[i:]), data), cfg.limits)
        except Rejected as e:
            return str(e)
        return None
    if any(rel.startswith(d + "/") for d in ENGINE_DIRS if d != CONFLICT_DIR):
        return None  # the ledger and quarantine are the engine's own records
    if not rel.endswith(".json"):
        return "state/ holds only JSON documents (<collection>/<id>.json); move this file elsewhere"
    try:
        doc = canonical.parse(data)
    except canonical.JSONProblem as e:
        return str(e)
    if rel == CONFIG_PATH:
        return None  # parsed above
    if rel == FLEET_PATH:
        validator, schema = schemas.protocol("fleet"), "schemas/fleet.schema.json"
    elif rel.startswith(CONFLICT_DIR + "/"):
        validator, schema = schemas.protocol("conflict"), "schemas/conflict.schema.json"
    elif rel.startswith(RESOLUTION_DIR + "/"):
        validator, schema = schemas.protocol("resolution"), "schemas/resolution.schema.json"
    elif parts[0] == "state" and len(parts) >= 3:
        coll = cfg.collections.get(parts[1])
        if coll is None:
            return f"folder state/{parts[1]}/ is not a collection in {CONFIG_PATH}"
        doc_id = parts[-1].removesuffix(".json")
        if coll.doc_path(doc_id) != rel:
            return f"document {doc_id!r} belongs at {coll.doc_path(doc_id)} (collections.{coll.name}.shard)"
        if not isinstance(doc, dict) or doc.get("id") != doc_id:
            return f"its 'id' must be {doc_id!r}, the file's name"
        schema = f"schemas/{coll.schema}"
        schema_data = read(schema)
        if schema_data is None:
            return f"{CONFIG_PATH} names {schema}, which does not exist"
        try:
            validator = schemas.compile_bytes(schema_data, schema)
        except FleetError as e:
            return f"cannot be checked: {e}"
    else:
        return None
    problem = schemas.first_error(validator, doc)
    return f"{problem} ({schema})" if problem else None


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
    count, problems = validate(root, path)

    def text() -> None:
        for p in problems:
            click.echo(str(p))
        click.echo(f"{count} file(s) checked, {len(problems)} problem(s)", err=bool(problems))

    emit({"checked": count, "problems": [p.__dict__ for p in problems]}, as_json, text)
    if problems:
        sys.exit(EXIT_FAILURE)
