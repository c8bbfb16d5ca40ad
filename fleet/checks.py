"""The checks ``fleet validate`` makes, for any reader of a fleet's files.

One set of rules for a file on disk (``fleet validate``), in a person's
commit (before ``fleet run`` adopts it) and in main as a worker reads it: the
state documents and their collection's schema, fleet's own records and
formats, the world's schemas, delta files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleet import canonical, schemas
from fleet.config import CONFIG_PATH, FLEET_PATH, Config
from fleet.delta import Arrival, Rejected, parse
from fleet.errors import FleetError
from fleet.resolve import RESOLUTION_DIR
from fleet.state import CONFLICT_DIR, ENGINE_DIRS, Snapshot

_ENGINE_OWN = tuple(d + "/" for d in ENGINE_DIRS if d != CONFLICT_DIR)  # the ledger, quarantine: the engine's records


def check_in(snap: Snapshot, rel: str, data: bytes) -> str | None:
    """:func:`check_file` for a file of a commit: its schemas are the commit's
    own, so a person's commit and a worker's view of main are judged by the
    same rules as ``fleet validate`` on disk."""
    return check_file(snap.config, rel, data, snap.read)


def load_in(snap: Snapshot, rel: str, data: bytes) -> tuple[Any, str | None]:
    """:func:`check_in` that also returns the document it parsed (None if it is
    not JSON), so a reader that checks what it reads parses it once."""
    return _check(snap.config, rel, data, snap.read)


def world_problems(cfg: Config, read: Callable[[str], bytes | None]) -> list[tuple[str, str]]:
    """(file, what is wrong) for each problem of the world's tools and prompt
    (fleet.world): they are checked together, against the config."""
    return world_report(cfg, read)[0]


def world_report(cfg: Config, read: Callable[[str], bytes | None]
                 ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(problems, warnings) of the world, each as (file, what): a world with no
    problem may still be one its author did not mean (fleet.world.warnings)."""
    from fleet import world

    built, lines = world.check(cfg, read)
    problems = []
    for line in lines:
        path, _, message = line.partition(": ")
        problems.append((path, message))
    return problems, world.warnings(cfg, read, built) if built is not None else []


def touches_world(paths: list[str]) -> bool:
    """Whether a change to ``paths`` can change what fleet.world checks: the
    config, a declaration file (state/<name>.json) or a schema."""
    return any(p == CONFIG_PATH or (p.startswith("state/") and p.count("/") == 1) or p.startswith("schemas/")
               for p in paths)


def check_file(cfg: Config, rel: str, data: bytes, read: Callable[[str], bytes | None]) -> str | None:
    """Why the file ``rel`` with content ``data`` is not acceptable, or None.

    ``read`` gives the bytes of another file of the same fleet (the world's
    schemas), from disk or from a commit.
    """
    return _check(cfg, rel, data, read)[1]


def _check(cfg: Config, rel: str, data: bytes, read: Callable[[str], bytes | None]) -> tuple[Any, str | None]:
    """(the parsed document or None, why it is not acceptable or None)."""
    parts = rel.split("/")
    if parts[0] == "schemas" and len(parts) == 2:
        try:
            schemas.compile_schema(canonical.parse(data), rel)
        except canonical.JSONProblem as e:
            return None, str(e)
        except FleetError as e:
            return None, str(e).removeprefix(f"{rel}: ")
        return None, None
    if parts[0] != "state":  # a delta file: under deltas/, in an inbox folder, or named on the command line
        i = parts.index("deltas") if "deltas" in parts else 0
        try:
            parse(Arrival("disk", "/".join(parts[i:]), data), cfg.limits)
        except Rejected as e:
            return None, str(e)
        return None, None
    if rel.startswith(_ENGINE_OWN):
        return None, None  # the ledger and quarantine are the engine's own records
    if not rel.endswith(".json"):
        return None, "state/ holds only JSON documents (<collection>/<id>.json); move this file elsewhere"
    try:
        doc = canonical.parse(data)
    except canonical.JSONProblem as e:
        return None, str(e)
    if rel == CONFIG_PATH:
        return doc, None  # parsed above
    if rel == FLEET_PATH:
        validator, schema = schemas.protocol("fleet"), "schemas/fleet.schema.json"
    elif rel.startswith(CONFLICT_DIR + "/"):
        validator, schema = schemas.protocol("conflict"), "schemas/conflict.schema.json"
    elif rel.startswith(RESOLUTION_DIR + "/"):
        validator, schema = schemas.protocol("resolution"), "schemas/resolution.schema.json"
    elif parts[0] == "state" and len(parts) >= 3:
        coll = cfg.collections.get(parts[1])
        if coll is None:
            return doc, f"folder state/{parts[1]}/ is not a collection in {CONFIG_PATH}"
        doc_id = parts[-1].removesuffix(".json")
        if coll.doc_path(doc_id) != rel:
            return doc, f"document {doc_id!r} belongs at {coll.doc_path(doc_id)} (collections.{coll.name}.shard)"
        if not isinstance(doc, dict) or doc.get("id") != doc_id:
            return doc, f"its 'id' must be {doc_id!r}, the file's name"
        schema = f"schemas/{coll.schema}"
        schema_data = read(schema)
        if schema_data is None:
            return doc, f"{CONFIG_PATH} names {schema}, which is missing or not a regular file"
        try:
            validator = schemas.compile_bytes(schema_data, schema)
        except FleetError as e:
            return doc, f"cannot be checked: {e}"
    else:
        return doc, None
    problem = schemas.first_error(validator, doc)
    return doc, f"{problem} ({schema})" if problem else None
