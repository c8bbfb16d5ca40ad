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
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Stopwatch, git, log

DEFAULT_REPEAT = 1
SMALL_REPEAT = 3
GOAL = 1.5
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


# -- the benchmark ---------------------------------------------------------------


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
        # The generated objects must not sit in the heap during the timed runs:
        # Python's cyclic GC would scan them on both sides' time.
        del world["documents"], world["by_worker"]
        gc.collect()
        log(f"{name}: setup took {sw_setup.times[0]:.1f} s ({n_deltas:,} deltas, {n_ops:,} ops)")

        sw_ours, sw_floor = Stopwatch(), Stopwatch()
        report: Any = None
        floor_phases: dict[str, float] = {}
        phases = _phase_timer() if args.phases else None
        verified: Any = "skipped"
        try:
            for i in range(args.repeat):
                ours_repo = benchlib.copy_repo(pristine, root / f"ours-{i}")
                floor_repo = benchlib.copy_repo(pristine, root / f"floor-{i}")
                for side in (("ours", "floor") if i % 2 == 0 else ("floor", "ours")):
                    os.sync()  # the copies' dirty pages are not written back on either side's time
                    if side == "ours":
                        with sw_ours:
                            report = ours(ours_repo)
                        log(f"{name}: run {i + 1}/{args.repeat}: ours {sw_ours.times[-1]:.2f} s")
                    else:
                        with sw_floor:
                            floor_out = floor(floor_repo, floor_deltas, args.floor_json)
                        for k, v in floor_out["phases"].items():
                            floor_phases[k] = floor_phases.get(k, 0.0) + v
                        log(f"{name}: run {i + 1}/{args.repeat}: floor {sw_floor.times[-1]:.2f} s")
                if report.applied != n_deltas or report.quarantined or report.held:
                    reasons = {q.get("reason") for q in report.quarantined}
                    raise RuntimeError(
                        f"fleet applied {report.applied} of {n_deltas} deltas, quarantined "
                        f"{len(report.quarantined)} ({sorted(reasons)[:3]}), held {len(report.held)}"
                    )
                last = i == args.repeat - 1
                if last:
                    ours_files = _files_changed(ours_repo, "refs/heads/main")
                    floor_files = _files_changed(floor_repo, "HEAD")
                    if not args.no_verify:
                        problem = verify(ours_repo, floor_repo)
                        if problem:
                            raise RuntimeError(f"ours and the floor disagree: {problem}")
                        verified = True
                if not (last and args.keep):
                    shutil.rmtree(ours_repo)
                    shutil.rmtree(floor_repo)
        finally:
            if phases is not None:
                phases.restore()
        if phases is not None:
            per_run = {k: {"s": round(v["s"] / args.repeat, 4), "calls": v["calls"] // args.repeat}
                       for k, v in phases.report().items()}

        if args.profile:
            prof_repo = benchlib.copy_repo(pristine, root / "ours-profile")
            benchlib.profile_to_stderr(lambda: ours(prof_repo), 25, f"{name}: fleet.commands.merge.merge")

        out = benchlib.result(
            name,
            benchlib.median(sw_ours.times),
            benchlib.median(sw_floor.times),
            "s",
            goal=GOAL,
            workers=size["workers"],
            agents=world["agents"],
            deltas=n_deltas,
            ops=n_ops,
            ops_by_kind=world["kinds"],
            docs_before=n_docs,
            docs_touched=world["touched"],
            docs_touched_existing=world["touched_existing"],
            delta_bytes=delta_bytes,
            docs_changed=report.docs_changed,
            ours_files_in_commit=ours_files,
            floor_files_in_commit=floor_files,
            floor_json=args.floor_json,
            repeat=args.repeat,
            ours_runs=[round(t, 3) for t in sw_ours.times],
            floor_runs=[round(t, 3) for t in sw_floor.times],
            ours_cpu=round(benchlib.median(sw_ours.cpu), 3),
            floor_cpu=round(benchlib.median(sw_floor.cpu), 3),
            cpu_ratio=round(benchlib.median(sw_ours.cpu) / benchlib.median(sw_floor.cpu), 3),
            load_avg=round(os.getloadavg()[0], 2),
            cpus=os.cpu_count(),
            verified=verified,
            setup_s=round(sw_setup.times[0], 1),
            tmp_fs=benchlib.fs_type(root),
        )
        if phases is not None:
            out["ours_phases"] = per_run  # seconds per run; indented names are inside the one above
            out["floor_phases"] = {k: round(v / args.repeat, 4) for k, v in floor_phases.items()}
        return [out]
