"""`fleet validate [PATH]`: state and deltas on disk against their schemas.

It reads the working tree (what you are about to commit), not main, and
reports every problem, one line each, naming the file and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleet import canonical, config as config_mod, schemas
from fleet.config import CONFIG_PATH, FLEET_PATH, Config
from fleet.delta import Arrival, Rejected, parse
from fleet.errors import FleetError
from fleet.state import CONFLICT_DIR, ENGINE_DIRS


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
        deltas = root / "deltas"
        if deltas.is_dir():
            files += sorted(p for p in deltas.rglob("*.json"))
    else:
        target = target.resolve()
        if not target.exists():
            raise FleetError(f"{target}: no such file or directory")
        files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    problems: list[Problem] = []
    for f in files:
        try:
            rel = f.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = str(f)
        problem = _check(root, cfg, rel, f.read_bytes())
        if problem:
            problems.append(Problem(rel, problem))
    return len(files), problems


def _check(root: Path, cfg: Config, rel: str, data: bytes) -> str | None:
    parts = rel.split("/")
    if "deltas" in parts[:-1] or (parts[0] != "state" and rel.endswith(".json") and b'"ops"' in data):
        i = parts.index("deltas") if "deltas" in parts else 0
        try:
            parse(Arrival("disk", "/".join(parts[i:]), data), cfg.limits)
        except Rejected as e:
            return str(e)
        return None
    if any(rel.startswith(d + "/") for d in ENGINE_DIRS if d != CONFLICT_DIR):
        return None  # the ledger and quarantine are the engine's own records
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
        if not (root / schema).is_file():
            return f"{CONFIG_PATH} names {schema}, which does not exist"
        validator = schemas.compile_bytes((root / schema).read_bytes(), schema)
    elif rel.startswith("schemas/"):
        try:
            schemas.compile_schema(doc, rel)
        except FleetError as e:
            return str(e).removeprefix(f"{rel}: ")
        return None
    else:
        return None
    problem = schemas.first_error(validator, doc)
    return f"{problem} ({schema})" if problem else None
