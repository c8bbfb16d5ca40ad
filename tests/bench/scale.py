"""scale: a tick of 256 workers (GitHub's matrix limit) with 40 agents each, coalesced.

10,240 agents, their documents sharded over 256 folders, the origin served by
``git daemon`` on 127.0.0.1 with a ``pre-receive`` hook that counts pushes. As
on GitHub Actions in coalesced mode, each worker fetches main and writes its
delta files to an outbox (the matrix's artifact); one merge takes them all in
and publishes. Lines, each with its floor from the same run:

- ``scale-pushes``: pushes to the repository per tick (goal at most 2, so a
  five-minute tick stays inside GitHub's six pushes a minute); the floor is 1,
  the least a tick that changes main can do.
- ``scale-merge``: ``fleet merge --inbox`` against json plus ``git add``,
  ``git commit`` and one push of the same state files.
- ``scale-tick``: the whole coordination wall time (every worker's fetch,
  turns on the offline provider and outbox, then the merge) against raw git
  doing the same moves: each worker a ``git fetch`` and the same files
  written, then the merge's floor.

Workers run one after the other in this process, with warm caches (a tick
ran before), as in tick-overhead. ``--small``: 16 workers.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import orjson
from benchlib import Stopwatch, git, log, median, result, workdir
from tick_overhead import Daemon, merged_files

from fleet import canonical
from fleet.commands.init import init
from fleet.commands.merge import merge
from fleet.commands.work import work
from fleet.config import parse as parse_config
from fleet.workspace import private_repo

AGENTS_PER_WORKER = 40
DEFAULT_REPEAT = 1
SMALL_REPEAT = 1
HOOK = "#!/bin/sh\necho push >> \"$(dirname \"$0\")/../pushes\"\n"


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--workers", type=int, default=None, help="workers per tick (default 256; --small 16)")


def _world(root: Path, workers: int) -> Path:
    repo = root / "fleet"
    init(repo)
    cfg_path = repo / "state" / "config.json"
    raw = orjson.loads(cfg_path.read_bytes())
    names = [f"a{i:05d}" for i in range(workers * AGENTS_PER_WORKER)]
    raw["agents"] = {a: {"priority": 0} for a in names}
    raw["collections"]["agents"]["shard"] = 2  # 10,240 documents: no folder nears GitHub's 3,000 entries
    raw.setdefault("run", {})["workers"] = workers
    cfg_path.write_bytes(canonical.dumps(raw))
    cfg = parse_config(canonical.dumps(raw))
    for old in (repo / "state" / "agents").glob("*.json"):
        old.unlink()
    for a in names:
        p = repo / cfg.collections["agents"].doc_path(a)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(canonical.dumps({"id": a, "name": a, "persona": f"{a} is a benchmark agent.", "bio": "",
                                       "interests": [], "karma": 0, "post_count": 0, "memory": []}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench world")
    return repo


def _pushes(bare: Path) -> int:
    f = bare / "pushes"
    return len(f.read_text().splitlines()) if f.exists() else 0


def _tick_ours(repo: Path, url: str, bare: Path, workers: int, outbox: Path) -> dict[str, Any]:
    before = _pushes(bare)
    whole, merging = Stopwatch(), Stopwatch()
    with whole:
        for i in range(1, workers + 1):
            work(repo, worker=i, workers=workers, remote=url, outbox=outbox)
        with merging:
            report = merge(private_repo(repo / ".git", "merge.git"), remote=url, inbox=(outbox,))
    deltas, state = merged_files(repo, report.commit, report.tick)
    return {"tick": whole.times[0], "merge": merging.times[0], "pushes": _pushes(bare) - before,
            "deltas": deltas, "state": state, "applied": report.applied}


def tick_floor(clones: list[Path], merger: Path, url: str, tick: int, outbox: Path,
                deltas: dict[str, dict[str, bytes]], state: dict[str, bytes]) -> dict[str, float]:
    whole, merging = Stopwatch(), Stopwatch()
    with whole:
        for i, clone in enumerate(clones, 1):
            git(clone, "fetch", "-q", url, "+refs/heads/main:refs/remotes/origin/main")
            for rel, data in deltas.get(f"w{i}", {}).items():
                f = outbox / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
        with merging:
            git(merger, "fetch", "-q", url, "+refs/heads/main:refs/remotes/origin/main")
            git(merger, "reset", "-q", "--hard", "refs/remotes/origin/main")
            for rel in sorted(p for p in outbox.rglob("*.json")):
                orjson.loads(rel.read_bytes())  # the floor reads every delta once
            for rel, data in state.items():
                f = merger / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
            git(merger, "add", "-A", "state")
            git(merger, "commit", "-q", "-m", f"merge tick {tick}")
            git(merger, "push", "-q", url, "HEAD:refs/heads/main")
    shutil.rmtree(outbox)
    return {"tick": whole.times[0], "merge": merging.times[0]}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    workers = args.workers or (16 if args.small else 256)
    repeat = args.repeat
    with workdir(args.tmp, "fleet-bench-scale-", args.keep) as tmp:
        log(f"{workers} workers x {AGENTS_PER_WORKER} agents: building the world")
        repo = _world(tmp, workers)
        served = tmp / "served"
        served.mkdir()
        for name in ("ours.git", "floor.git"):
            git(tmp, "clone", "-q", "--bare", str(repo), str(served / name))
            hook = served / name / "hooks" / "pre-receive"
            hook.write_text(HOOK)
            hook.chmod(0o755)
        daemon = Daemon(served)
        try:
            ours_url, floor_url = daemon.url("ours.git"), daemon.url("floor.git")
            clones = []
            for i in range(1, workers + 1):
                c = tmp / f"floor-w{i}"
                git(tmp, "clone", "-q", "--depth", "1", "--no-checkout", floor_url, str(c))  # a floor worker only fetches
                clones.append(c)
            merger = tmp / "floor-merge"
            git(tmp, "clone", "-q", floor_url, str(merger))
            ours: list[dict[str, Any]] = []
            floor: list[dict[str, float]] = []
            for n in range(repeat + 1):  # the first tick warms caches and clones, and is not counted
                o = _tick_ours(repo, ours_url, served / "ours.git", workers, tmp / "outbox")
                f = tick_floor(clones, merger, floor_url, n + 1, tmp / "floor-outbox", o["deltas"], o["state"])
                log(f"tick {n + 1}: ours {o['tick']:.1f}s (merge {o['merge']:.2f}s, {o['pushes']} push(es), "
                    f"{o['applied']} deltas); floor {f['tick']:.1f}s (merge {f['merge']:.2f}s)"
                    + ("" if n else " (warm-up)"))
                if n:
                    ours.append(o)
                    floor.append(f)
        finally:
            daemon.stop()
    size = {"workers": workers, "agents": workers * AGENTS_PER_WORKER, "deltas": ours[-1]["applied"],
            "transport": "git daemon on 127.0.0.1", "mode": "coalesced"}
    pushes = max(o["pushes"] for o in ours)
    return [
        result("scale-pushes", pushes, 1, "pushes per tick", goal=2, pushes_per_tick=pushes, **size),
        result("scale-merge", median([o["merge"] for o in ours]), median([f["merge"] for f in floor]), "s",
               goal=1.5, **size),
        result("scale-tick", median([o["tick"] for o in ours]), median([f["tick"] for f in floor]), "s",
               goal=1.5, **size),
    ]
