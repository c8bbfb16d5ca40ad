"""Benchmark ``merge``: one tick of many deltas into a large state, end to end.

Ours: ``fleet.commands.merge.merge(repo)`` in local mode (no remote), from the
worker branches ``fleet/t1/<worker>`` to a tick commit on ``main``: reading
the branches, parsing and checking every delta, authority, applying, schema
validation of every touched document, the ledger, the commit, moving main
(and the checkout of main, as ``git pull`` would), deleting the branches.

Floor, on an identical copy in the same run: the same delta files checked out
to disk (untimed), then, timed: read every delta file with ``json``, read the
documents the ops touch with ``json``, apply the ops the simplest way, write
the documents back (``json``, sorted keys, indent 2, as fleet's documents
are), one ``git add -A`` and one ``git commit``. No validation, no ledger, no
authority: what any tool doing this job must at least do.

Second floor (``merge-fastimport``, issue 15 item 3), on a third copy: the
same delta bytes parsed with ``orjson``, the touched documents read with
``orjson`` and applied the same way, and written as blobs in one commit on
main by one ``git fast-import`` (no index, no checkout). Goal: at most 2.0.
fleet runs git with glibc's heap kept until it ends (fleet.git._env: on a
virtual machine git fast-import spent half its time giving memory back and
taking it again); the floors run git as installed. The line also reports the
fast-import floor run with the same setting (``floor_same_heap`` and
``ratio_same_heap``), so that what fleet gains from it alone can be told apart.

Each side runs in a fresh Python process (imports before the clock), so each
line reports the peak memory of ours and of its floor (``*_maxrss_mb``: the
largest resident size of the process or of any git it ran).

``merge-hotdoc``: the engine alone (``merge_tick`` in memory) on k = 1,000
deltas that each append a note to one document, the second one too long for
the schema (a culprit, so the tick is decided delta by delta), against plain
code appending the k-1 good notes; ``growth_k_over_quarter_k`` is our time at
k over our time at k/4 (4 for O(k), 16 for O(k^2)).

The world (setup, untimed): ``fleet init``, then a person's commit that puts
in a bench config (one collection ``items`` of ``--docs`` documents with
``shard: 2``, every agent in ``config.agents``, rules allowing the ops) and a
small JSON Schema. Each agent's delta has three ops: ``incr score`` on a random
item, ``add likes <itself>`` on another, and either ``set status`` on the item
it owns, ``create`` of a new item of its own, or ``incr views``. With the
default sizes nearly every item is touched. One ``fast-import`` per worker
branch, then one ``git repack`` so the repository looks like one that was
fetched into, not 256 packs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Stopwatch, git, log

DEFAULT_REPEAT = 1
SMALL_REPEAT = 3
GOAL = 1.5
FASTIMPORT_GOAL = 2.0  # issue 15, item 3
BIG = {"workers": 256, "agents": 100, "docs": 10_000}
SMALL = {"workers": 16, "agents": 100, "docs": 1_000}

COLLECTION = "items"
SHARD = 2
TICK = 1
STATUSES = ("draft", "open", "closed", "archived")
TAGS = ("ops", "research", "design", "bug", "idea", "news", "question", "infra", "docs", "ml")
WORDS = ("fleet", "agent", "tick", "merge", "delta", "state", "branch", "schema", "ledger", "worker",
         "commit", "conflict", "replay", "stream", "budget", "policy")

_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", "not": {"pattern": "\\.\\."}}
ITEM_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "item",
    "description": "state/items/<xx>/<id>.json: a work item owned by its author (benchmark world).",
    "type": "object",
    "required": ["id", "author", "title", "status"],
    "additionalProperties": False,
    "properties": {
        "id": {"$ref": "#/$defs/id"},
        "author": {"$ref": "#/$defs/id"},
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "body": {"type": "string", "maxLength": 4000},
        "status": {"enum": list(STATUSES)},
        "tick": {"type": "integer", "minimum": 0},
        "score": {"type": "integer"},
        "views": {"type": "integer", "minimum": 0},
        "likes": {"type": "array", "items": {"$ref": "#/$defs/id"}, "uniqueItems": True, "maxItems": 5000},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 40}, "uniqueItems": True, "maxItems": 10},
    },
    "$defs": {"id": _ID},
}


def add_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--workers", type=int, help=f"worker branches (default {BIG['workers']}, --small {SMALL['workers']})")
    g.add_argument("--agents", type=int, help=f"agents per worker (default {BIG['agents']})")
    g.add_argument("--docs", type=int, help=f"documents in the state (default {BIG['docs']:,}, --small {SMALL['docs']:,})")
    g.add_argument("--phases", action="store_true",
                   help="report where fleet's time goes (wraps its main steps; about 1 us a call)")
    g.add_argument("--floor-json", choices=("json", "orjson"), default="json",
                   help="the floor's JSON library (default json, as the issue says)")
    g.add_argument("--no-verify", action="store_true", help="skip comparing ours and the floor's resulting documents")


# -- the world ---------------------------------------------------------------


def doc_path(doc_id: str) -> str:
    """state/items/<xx>/<id>.json: the layout fleet uses for a sharded collection."""
    return f"state/{COLLECTION}/{hashlib.sha256(doc_id.encode()).hexdigest()[:SHARD]}/{doc_id}.json"


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _utc(rng: random.Random) -> str:
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=rng.randrange(600_000_000))
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate(workers: int, agents_per: int, docs: int, seed: int) -> dict[str, Any]:
    """Documents, config and per-worker delta bodies, all deterministic in ``seed``."""
    rng = random.Random(seed)
    worker_ids = [f"w{w:03d}" for w in range(workers)]
    agents = [f"{w}-a{a:03d}" for w in worker_ids for a in range(agents_per)]
    doc_ids = [f"i{n:05d}" for n in range(docs)]
    authors = rng.sample(agents, min(docs, len(agents)))
    owned: dict[str, str] = {}
    documents: dict[str, dict[str, Any]] = {}
    for n, doc_id in enumerate(doc_ids):
        author = authors[n % len(authors)]
        owned.setdefault(author, doc_id)
        documents[doc_id] = {
            "id": doc_id,
            "author": author,
            "title": f"Item {n}: {_text(rng, 4)}",
            "body": _text(rng, 30),
            "status": rng.choice(STATUSES),
            "tick": 0,
            "score": rng.randint(0, 50),
            "views": rng.randint(0, 1000),
            "likes": sorted(rng.sample(agents, 3)),
            "tags": sorted(rng.sample(TAGS, 2)),
        }
    config = {
        "fleet": {"name": "merge benchmark"},
        "collections": {
            COLLECTION: {
                "schema": "item.schema.json",
                "owner": "author",
                "shard": SHARD,
                "own": ["create", "set:status", "set:title", "set:body", "add:tags", "remove:tags", "delete"],
                "others": ["incr:score", "incr:views", "add:likes@self", "remove:likes@self"],
            }
        },
        "agents": {a: {} for a in agents},
        "limits": {"max_delta_bytes": 65536, "max_ops": 64, "window": 8},
        "policies": {"*": "hold"},
    }
    by_worker: dict[str, list[dict[str, Any]]] = {w: [] for w in worker_ids}
    kinds = {"incr": 0, "add": 0, "set": 0, "create": 0}
    touched: set[str] = set()
    for i, agent in enumerate(agents):
        worker, _, a = agent.partition("-")
        ops: list[dict[str, Any]] = [
            {"op": "incr", "collection": COLLECTION, "id": rng.choice(doc_ids), "path": ["score"],
             "by": rng.choice((1, 1, 2, -1))},
            {"op": "add", "collection": COLLECTION, "id": rng.choice(doc_ids), "path": ["likes"], "value": agent},
        ]
        if agent in owned:
            ops.append({"op": "set", "collection": COLLECTION, "id": owned[agent], "path": ["status"],
                        "value": rng.choice(STATUSES)})
        elif i % 2 == 0:
            new_id = f"n-{agent}"
            ops.append({"op": "create", "collection": COLLECTION, "id": new_id, "doc": {
                "id": new_id, "author": agent, "title": _text(rng, 5), "body": _text(rng, 25),
                "status": "draft", "tick": TICK, "tags": sorted(rng.sample(TAGS, 1))}})
        else:
            ops.append({"op": "incr", "collection": COLLECTION, "id": rng.choice(doc_ids), "path": ["views"], "by": 1})
        for op in ops:
            kinds[op["op"]] += 1
            touched.add(op["id"])
        stream = f"s{a[1:]}"
        by_worker[worker].append({
            "id": f"t{TICK}-{worker}-{stream}-{rng.getrandbits(64):016x}",
            "tick": TICK,
            "utc": _utc(rng),
            "worker": worker,
            "stream": stream,
            "agent": agent,
            "ops": ops,
            "meta": {
                "model": "claude-haiku-4-5",
                "provider": "anthropic",
                "usage": {
                    "input_tokens": rng.randint(800, 4000),
                    "output_tokens": rng.randint(40, 400),
                    "cache_read_input_tokens": rng.randint(0, 3000),
                    "cache_creation_input_tokens": 0,
                    "cost_usd": round(rng.uniform(0.0005, 0.005), 6),
                },
            },
        })
    return {
        "documents": documents,
        "config": config,
        "by_worker": by_worker,
        "agents": len(agents),
        "kinds": kinds,
        "touched": len(touched),
        "touched_existing": len(touched & documents.keys()),
    }


def build(root: Path, world: dict[str, Any]) -> tuple[Path, Path, int]:
    """The pristine fleet repository with worker branches, and the floor's delta files.

    Returns (repo, delta folder, delta bytes).
    """
    from fleet import canonical
    from fleet.commands.init import init
    from fleet.delta import file_path
    from fleet.git import Git
    from fleet.worker import commit_deltas, stage_branch

    repo = root / "pristine"
    init(repo)
    for child in (repo / "state").iterdir():  # the example world goes; fleet.json stays
        if child.is_dir():
            shutil.rmtree(child)
    (repo / "schemas" / "item.schema.json").write_bytes(canonical.dumps(ITEM_SCHEMA))
    (repo / "state" / "config.json").write_bytes(canonical.dumps(world["config"]))
    dirs: set[Path] = set()
    for doc_id, doc in world["documents"].items():
        p = repo / doc_path(doc_id)
        if p.parent not in dirs:
            p.parent.mkdir(parents=True, exist_ok=True)
            dirs.add(p.parent)
        p.write_bytes(canonical.dumps(doc))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m",
        f"bench: a world of {len(world['documents']):,} items and {world['agents']:,} agents")

    g = Git(repo)
    main = git(repo, "rev-parse", "HEAD").decode().strip()
    floor_deltas = root / "floor-deltas"
    nbytes = 0
    for worker, bodies in world["by_worker"].items():
        commit = commit_deltas(g, main, TICK, worker, bodies)
        if not stage_branch(g, TICK, worker, commit):
            raise RuntimeError(f"could not create the branch of {worker}")
        for body in bodies:  # the same bytes commit_deltas wrote, for the floor
            p = floor_deltas / file_path(body)
            p.parent.mkdir(parents=True, exist_ok=True)
            data = canonical.dumps(body)
            nbytes += len(data)
            p.write_bytes(data)
    git(repo, "repack", "-a", "-d", "-q")
    git(repo, "prune-packed")
    return repo, floor_deltas, nbytes


# -- the two sides -------------------------------------------------------------


def ours(repo: Path) -> Any:
    from fleet.commands.merge import merge

    return merge(repo)


def floor(repo: Path, deltas_dir: Path, lib: str = "json") -> dict[str, Any]:
    """Read deltas and documents, apply the ops the simplest way, write back, commit."""
    t0 = time.perf_counter()
    if lib == "orjson":
        import orjson

        def load(f: Any) -> Any:
            return orjson.loads(f.read())

        def dump(doc: Any, f: Any) -> None:
            f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE))
        mode = "b"
    else:
        load = json.load

        def dump(doc: Any, f: Any) -> None:
            f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")  # one write: faster than json.dump(doc, f)
        mode = ""

    deltas = []
    for dirpath, _dirs, files in os.walk(deltas_dir):
        for name in files:
            with open(os.path.join(dirpath, name), "r" + mode) as f:
                deltas.append(load(f))
    t_read = time.perf_counter()

    docs = _apply_simply(repo, deltas, load, mode)

    t_apply = time.perf_counter()
    written = 0
    for path, doc in docs.items():
        if doc is None:
            if os.path.exists(path):
                os.remove(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w" + mode) as f:
            dump(doc, f)
        written += 1
    t_write = time.perf_counter()
    git(repo, "add", "-A")
    t_add = time.perf_counter()
    git(repo, "commit", "-q", "-m", f"tick {TICK}: {len(deltas)} deltas")
    t_commit = time.perf_counter()
    return {
        "deltas": len(deltas),
        "docs_written": written,
        "phases": {
            "read deltas": t_read - t0,
            "read docs + apply": t_apply - t_read,
            "write docs": t_write - t_apply,
            "git add -A": t_add - t_write,
            "git commit": t_commit - t_add,
        },
    }


def _apply_simply(repo: Path, deltas: list[Any], load: Any, mode: str) -> dict[str, Any]:
    """Read the documents the ops touch from the checkout and apply the ops the
    simplest way; file -> document, None when deleted or absent."""
    docs: dict[str, Any] = {}  # file -> document, None when deleted or absent
    for d in deltas:
        for op in d["ops"]:
            doc_id = op["id"]
            path = os.path.join(repo, "state", op["collection"],
                                hashlib.sha256(doc_id.encode()).hexdigest()[:SHARD], doc_id + ".json")
            if path not in docs:
                try:
                    with open(path, "r" + mode) as f:
                        docs[path] = load(f)
                except FileNotFoundError:
                    docs[path] = None
            kind = op["op"]
            if kind == "create":
                docs[path] = op["doc"]
                continue
            if kind == "delete":
                docs[path] = None
                continue
            target = docs[path]
            *parents, last = op["path"]
            for k in parents:
                target = target.setdefault(k, {})
            if kind == "set":
                target[last] = op["value"]
            elif kind == "incr":
                target[last] = target.get(last, 0) + op["by"]
            elif kind == "add":
                members = target.setdefault(last, [])
                if op["value"] not in members:
                    members.append(op["value"])
                    members.sort()
            elif kind == "remove":
                members = target.get(last, [])
                if op["value"] in members:
                    members.remove(op["value"])
            elif kind == "append":
                items = target.setdefault(last, [])
                if all(i["id"] != op["item"]["id"] for i in items):
                    items.append(op["item"])
    return docs


def floor_fastimport(repo: Path, deltas_dir: Path) -> dict[str, Any]:
    """The least work: parse the same delta bytes with orjson, read the touched
    documents (orjson), apply the ops, write them as blobs in one commit on
    main made by one ``git fast-import`` (no index, no checkout)."""
    import orjson

    t0 = time.perf_counter()
    deltas = []
    for dirpath, _dirs, files in os.walk(deltas_dir):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                deltas.append(orjson.loads(f.read()))
    t_read = time.perf_counter()
    docs = _apply_simply(repo, deltas, lambda f: orjson.loads(f.read()), "b")
    t_apply = time.perf_counter()
    option = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    head = git(repo, "rev-parse", "HEAD").decode().strip()
    msg = f"tick {TICK}: {len(deltas)} deltas\n".encode()
    chunks = [b"commit refs/heads/main\ncommitter Bench Person <person@example.com> 0 +0000\n",
              b"data %d\n" % len(msg), msg, f"from {head}\n".encode()]
    prefix = len(str(repo)) + 1
    written = 0
    for path, doc in docs.items():
        rel = path[prefix:]
        if doc is None:
            if os.path.exists(path):
                chunks.append(f"D {rel}\n".encode())
            continue
        data = orjson.dumps(doc, option=option)
        chunks.append(b"M 100644 inline %s\ndata %d\n" % (rel.encode(), len(data)))
        chunks.append(data)
        chunks.append(b"\n")
        written += 1
    chunks.append(b"done\n")
    stream = b"".join(chunks)
    t_write = time.perf_counter()
    git(repo, "fast-import", "--quiet", "--done", input=stream)
    t_commit = time.perf_counter()
    return {
        "deltas": len(deltas),
        "docs_written": written,
        "phases": {
            "read deltas (orjson)": t_read - t0,
            "read docs + apply (orjson)": t_apply - t_read,
            "dumps (orjson) + stream": t_write - t_apply,
            "git fast-import": t_commit - t_write,
        },
    }


# -- checks --------------------------------------------------------------------


def _items_at(repo: Path, rev: str) -> dict[str, Any]:
    listing = git(repo, "ls-tree", "-r", "-z", rev, "--", f"state/{COLLECTION}/")
    entries = []
    for rec in listing.split(b"\0"):
        if rec:
            meta, _, path = rec.partition(b"\t")
            entries.append((path.decode(), meta.split(b" ")[2].decode()))
    out = git(repo, "cat-file", "--batch", input="".join(f"{sha}\n" for _, sha in entries).encode())
    docs, pos = {}, 0
    for path, _sha in entries:
        nl = out.index(b"\n", pos)
        size = int(out[pos:nl].split(b" ")[2])
        docs[path] = json.loads(out[nl + 1: nl + 1 + size])
        pos = nl + 1 + size + 1
    return docs


def verify(ours_repo: Path, floor_repo: Path) -> str | None:
    """None if both sides ended with the same documents, else what differs."""
    a, b = _items_at(ours_repo, "refs/heads/main"), _items_at(floor_repo, "HEAD")
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        return f"different files: only ours {only_a[:3]} ({len(only_a)}), only floor {only_b[:3]} ({len(only_b)})"
    bad = [p for p in a if a[p] != b[p]]
    return f"{len(bad)} documents differ, e.g. {bad[0]}" if bad else None


def _files_changed(repo: Path, rev: str) -> int:
    out = git(repo, "diff-tree", "--no-commit-id", "-r", "--name-only", f"{rev}~1", rev)
    return len(out.splitlines())


def _phase_timer() -> benchlib.PhaseTimer:
    import fleet.commands.merge as merge_cmd
    import fleet.config as config_mod
    import fleet.engine as engine
    import fleet.engine.apply as engine_apply
    import fleet.engine.order as engine_order
    from fleet.git import Git
    from fleet.repo import FleetRepo

    pt = benchlib.PhaseTimer()
    wanted = [
        (FleetRepo, "snapshot", "repo.snapshot (ls-tree of main)"),
        (config_mod, "parse", "config.parse"),
        (FleetRepo, "sources", "repo.sources"),
        (FleetRepo, "arrivals", "repo.arrivals (read delta blobs)"),
        (merge_cmd, "merge_tick", "engine.merge_tick"),
        (engine_order, "parse", "  engine: delta.parse (schema check)"),
        (engine_apply.Applier, "run", "  engine: Applier.run"),
        (engine_apply, "doc_problem", "    engine: doc_problem (validate doc)"),
        (engine_apply, "combine", "    engine: combine (apply ops)"),
        (engine, "finish", "  engine: finish (canonical dumps, ledger)"),
        (merge_cmd, "message", "merge.message"),
        (Git, "write_commit", "git.write_commit (fast-import)"),
        (FleetRepo, "publish", "repo.publish (move main + checkout)"),
        (FleetRepo, "delete_sources", "repo.delete_sources"),
        (Git, "gc_auto", "git.gc_auto"),
        (Git, "cat_blobs", "git.cat_blobs (all calls)"),
    ]
    for owner, attr, label in wanted:
        present = attr in owner.__dict__ if isinstance(owner, type) else hasattr(owner, attr)
        if present:
            pt.wrap(owner, attr, label)
    return pt


# -- a hot document --------------------------------------------------------------

HOT_K = 1_000
HOT_SMALL_K = 200
NOTE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "item with notes",
    "type": "object",
    "required": ["id", "author"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "author": {"type": "string"},
        "notes": {"type": "array", "maxItems": 5000, "items": {
            "type": "object", "required": ["id", "author", "text"], "additionalProperties": False,
            "properties": {"id": {"type": "string"}, "author": {"type": "string"},
                           "text": {"type": "string", "maxLength": 200}}}},
    },
}


def hot_world(root: Path, k: int) -> tuple[Any, list[Any], list[bytes]]:
    """A world with one document that ``k`` deltas each append a note to; the
    second delta's note is too long for the schema (the culprit). Returns the
    snapshot, the arrivals and the delta bytes."""
    from fleet import canonical
    from fleet.commands.init import init
    from fleet.delta import Arrival, Op, file_path, make
    from fleet.state import MemorySnapshot

    init(root)
    files = {p.relative_to(root).as_posix(): p.read_bytes()
             for top in ("state", "schemas") for p in sorted((root / top).rglob("*")) if p.is_file()}
    cfg = json.loads(files["state/config.json"])
    agents = [f"a{n:03d}" for n in range(100)]
    cfg["collections"] = {COLLECTION: {"schema": "note.schema.json", "owner": "author", "own": ["create"],
                                       "others": ["append:notes"]}}
    cfg["agents"] = {a: {} for a in agents}
    cfg["policies"] = {"*": "hold"}
    cfg.pop("prompt", None)
    files = {p: b for p, b in files.items() if not p.startswith("state/") or p in ("state/fleet.json",)}
    files["state/config.json"] = canonical.dumps(cfg)
    files["schemas/note.schema.json"] = canonical.dumps(NOTE_SCHEMA)
    files[f"state/{COLLECTION}/hot.json"] = canonical.dumps({"id": "hot", "author": agents[0], "notes": []})
    arrivals, raw = [], []
    for n in range(k):
        agent = agents[n % len(agents)]
        text = "x" * 300 if n == 1 else f"note {n} by {agent}"
        op = Op("append", COLLECTION, "hot", ("notes",), {"id": f"n{n:05d}", "author": agent, "text": text})
        # each append a turn of its own stream: a stream takes one turn a tick
        body = make(tick=TICK, worker="w000", stream=f"s{agent}-{n}", agent=agent, ops=[op], meta={},
                    utc=f"2026-01-01T00:00:00.{n:06d}Z", delta_id=f"t{TICK}-w000-s{agent}-{n}-{n:06d}")
        data = canonical.dumps(body)
        arrivals.append(Arrival("refs/heads/fleet/t1/w000", file_path(body), data))
        raw.append(data)
    return MemorySnapshot(files), arrivals, raw


def hot_floor(doc_bytes: bytes, raw: list[bytes], culprit: str) -> bytes:
    """The k good appends by plain code: parse each delta, append its note, write the document once."""
    import orjson

    doc = orjson.loads(doc_bytes)
    for data in raw:
        d = orjson.loads(data)
        if d["id"] == culprit:
            continue
        for op in d["ops"]:
            doc["notes"].append(op["item"])
    out: bytes = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
    return out


def run_hot(root: Path, k: int, repeat: int, name: str) -> dict[str, Any]:
    """``merge-hotdoc``: the engine (``merge_tick``, in memory) on k appends to
    one document with one culprit, against the plain code of the k-1 good ones;
    with the time at k/4, so that the ratio of the two shows O(k) (4) or
    O(k^2) (16)."""
    from fleet.engine import merge_tick

    times: dict[int, list[float]] = {}
    floor_times: list[float] = []
    result: Any = None
    for size in (k // 4, k):
        snap, arrivals, raw = hot_world(root / f"hot-{size}", size)
        culprit = json.loads(raw[1])["id"]
        for _ in range(repeat):
            gc.collect()
            t0 = time.perf_counter()
            result = merge_tick(snap, arrivals)
            times.setdefault(size, []).append(time.perf_counter() - t0)
            if size == k:
                gc.collect()
                t0 = time.perf_counter()
                floor_doc = hot_floor(snap.read(f"state/{COLLECTION}/hot.json") or b"", raw, culprit)
                floor_times.append(time.perf_counter() - t0)
        if [q["delta"]["id"] for q in result.quarantined] != [culprit] or len(result.applied) != size - 1:
            raise RuntimeError(f"{name}: expected exactly the culprit quarantined, got {len(result.quarantined)}")
    if result.writes[f"state/{COLLECTION}/hot.json"] != floor_doc:
        raise RuntimeError(f"{name}: ours and the floor disagree on the document")
    ours_k, ours_quarter = benchlib.median(times[k]), benchlib.median(times[k // 4])
    return benchlib.result(name, ours_k, benchlib.median(floor_times), "s", k=k, culprits=1,
                           floor_is="orjson: parse each delta, append the k-1 good notes, dump once",
                           ours_quarter_k=round(ours_quarter, 4), growth_k_over_quarter_k=round(ours_k / ours_quarter, 2),
                           repeat=repeat, verified=True)


# -- the benchmark ---------------------------------------------------------------


SIDES = ("ours", "floor", "fastimport", "fastimport-heap")
HEAP = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_TOP_PAD_": str(64 << 20)}  # as fleet.git._env


def _cpu_now() -> float:
    """CPU seconds of this process and of the git processes it waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one side in this (fresh) process: imports first, then the timed work;
    returns its wall and CPU time and its peak memory (``maxrss_mb``: the
    largest resident size of this process or of any git process it ran)."""
    import resource

    import orjson  # noqa: F401  (imported before the clock, like fleet)

    from fleet.commands.merge import merge

    repo, side = Path(spec["repo"]), spec["side"]
    phases = _phase_timer() if spec.get("phases") else None
    gc.collect()
    c0, t0 = _cpu_now(), time.perf_counter()
    out: dict[str, Any] = {}
    if side == "ours":
        r = merge(repo)
        out = {"applied": r.applied, "quarantined": [q.get("reason") for q in r.quarantined], "held": len(r.held),
               "docs_changed": r.docs_changed}
    elif side == "floor":
        out = floor(repo, Path(spec["deltas"]), spec["lib"])
    else:
        if side == "fastimport-heap":
            os.environ.update(HEAP)  # the git it runs keeps its heap, as fleet's does
        out = floor_fastimport(repo, Path(spec["deltas"]))
    out["s"] = time.perf_counter() - t0
    out["cpu"] = _cpu_now() - c0
    # Linux keeps a process's peak across exec, so a git child's figure is at
    # least Python's size when it started: the larger of the two is the peak
    # of the side, Python or any git it ran.
    out["maxrss_mb"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                           resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    if phases is not None:
        phases.restore()
        out["ours_phases"] = phases.report()
    return out


def in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`_child` in a new Python process, so each side's peak memory is its own."""
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True)
    if p.returncode:
        raise RuntimeError(f"{spec['side']} failed: {p.stderr.decode(errors='replace').strip()[-3000:]}")
    result: dict[str, Any] = json.loads(p.stdout.splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    size = dict(SMALL if args.small else BIG)
    for k in size:
        if getattr(args, k, None):
            size[k] = getattr(args, k)
    name = "merge-small" if args.small else "merge"
    with benchlib.workdir(args.tmp, "fleet-bench-merge-", args.keep) as root:
        sw_setup = Stopwatch()
        with sw_setup:
            log(f"{name}: generating {size['workers']} workers x {size['agents']} agents, {size['docs']:,} documents")
            world = generate(size["workers"], size["agents"], size["docs"], args.seed)
            log(f"{name}: building the repository and {size['workers']} worker branches")
            pristine, floor_deltas, delta_bytes = build(root, world)
        n_deltas = sum(len(b) for b in world["by_worker"].values())
        n_ops = sum(world["kinds"].values())
        n_docs = len(world["documents"])
        del world["documents"], world["by_worker"]
        gc.collect()
        log(f"{name}: setup took {sw_setup.times[0]:.1f} s ({n_deltas:,} deltas, {n_ops:,} ops)")

        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        verified: Any = "skipped"
        files_in_commit: dict[str, int] = {}
        for i in range(args.repeat):
            repos = {side: benchlib.copy_repo(pristine, root / f"{side}-{i}") for side in SIDES}
            order = SIDES[i % len(SIDES):] + SIDES[: i % len(SIDES)]  # each side goes first in turn
            for side in order:
                os.sync()  # the copies' dirty pages are not written back on any side's time
                out = in_child({"side": side, "repo": str(repos[side]), "deltas": str(floor_deltas),
                                "lib": args.floor_json, "phases": bool(args.phases and side == "ours")})
                runs[side].append(out)
                log(f"{name}: run {i + 1}/{args.repeat}: {side} {out['s']:.2f} s, {out['maxrss_mb']:.0f} MB")
            report = runs["ours"][-1]
            if report["applied"] != n_deltas or report["quarantined"] or report["held"]:
                raise RuntimeError(
                    f"fleet applied {report['applied']} of {n_deltas} deltas, quarantined "
                    f"{len(report['quarantined'])} ({sorted(set(report['quarantined']))[:3]}), held {report['held']}"
                )
            last = i == args.repeat - 1
            if last:
                files_in_commit = {side: _files_changed(repos[side], "refs/heads/main") for side in SIDES}
                if not args.no_verify:
                    for side in ("floor", "fastimport", "fastimport-heap"):
                        problem = verify(repos["ours"], repos[side])
                        if problem:
                            raise RuntimeError(f"ours and the {side} floor disagree: {problem}")
                    verified = True
            if not (last and args.keep):
                for r in repos.values():
                    shutil.rmtree(r)

        if args.profile:
            prof_repo = benchlib.copy_repo(pristine, root / "ours-profile")
            benchlib.profile_to_stderr(lambda: ours(prof_repo), 25, f"{name}: fleet.commands.merge.merge")

        def med(side: str, key: str) -> float:
            return benchlib.median([r[key] for r in runs[side]])

        def peak(side: str, key: str) -> float:
            return round(max(r[key] for r in runs[side]), 1)

        common = dict(
            workers=size["workers"],
            agents=world["agents"],
            deltas=n_deltas,
            ops=n_ops,
            ops_by_kind=world["kinds"],
            docs_before=n_docs,
            docs_touched=world["touched"],
            docs_touched_existing=world["touched_existing"],
            delta_bytes=delta_bytes,
            docs_changed=runs["ours"][-1]["docs_changed"],
            repeat=args.repeat,
            ours_runs=[round(r["s"], 3) for r in runs["ours"]],
            ours_cpu=round(med("ours", "cpu"), 3),
            ours_maxrss_mb=peak("ours", "maxrss_mb"),
            ours_files_in_commit=files_in_commit.get("ours"),
            load_avg=round(os.getloadavg()[0], 2),
            cpus=os.cpu_count(),
            verified=verified,
            setup_s=round(sw_setup.times[0], 1),
            tmp_fs=benchlib.fs_type(root),
        )
        lines = []
        for side, bench, goal, what in (
            ("floor", name, GOAL, f"{args.floor_json} + git add -A + git commit"),
            ("fastimport", name.replace("merge", "merge-fastimport"), FASTIMPORT_GOAL,
             "orjson + one git fast-import commit"),
        ):
            out = benchlib.result(bench, med("ours", "s"), med(side, "s"), "s", goal=goal, floor_is=what, **common)
            out.update(
                floor_runs=[round(r["s"], 3) for r in runs[side]],
                floor_cpu=round(med(side, "cpu"), 3),
                cpu_ratio=round(med("ours", "cpu") / med(side, "cpu"), 3),
                floor_maxrss_mb=peak(side, "maxrss_mb"),
                floor_files_in_commit=files_in_commit.get(side),
            )
            if side == "floor":
                out["floor_json"] = args.floor_json
            else:
                out.update(floor_same_heap=round(med("fastimport-heap", "s"), 4),
                           ratio_same_heap=round(med("ours", "s") / med("fastimport-heap", "s"), 3))
            if args.phases:
                out["ours_phases"] = {k: {"s": round(benchlib.median([r["ours_phases"][k]["s"] for r in runs["ours"]]), 4),
                                          "calls": v["calls"]} for k, v in runs["ours"][-1]["ours_phases"].items()}
                out["floor_phases"] = {k: round(benchlib.median([r["phases"][k] for r in runs[side]]), 4)
                                       for k in runs[side][-1]["phases"]}
            lines.append(out)
        hot_name = name.replace("merge", "merge-hotdoc")
        log(f"{hot_name}: one document, {HOT_SMALL_K if args.small else HOT_K} appends, one culprit")
        lines.append(run_hot(root, HOT_SMALL_K if args.small else HOT_K, args.repeat, hot_name))
        return lines


if __name__ == "__main__":  # a side run in a child process (in_child)
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
    else:
        raise SystemExit("merge.py is run by tests/bench/run.py merge")
