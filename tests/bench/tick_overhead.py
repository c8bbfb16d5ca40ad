"""tick-overhead: the coordination cost of one tick, against raw git moving the same data.

For W workers (1, 4, 16, 64) with 4 agents each, the origin served by
``git daemon`` on 127.0.0.1. Ours: each worker's ``fleet work`` (fetch main,
refuse a wrong tick, run its agents on the offline provider, commit its delta
files in an isolated worktree, push its branch with a lease, clean up), then
``fleet merge`` (fetch, apply, validate, commit, one atomic push of main and
the branch deletions). Floor, in the same run: raw git moving the same bytes:
each worker fetches main, writes the same delta files, ``git add``,
``git commit``, ``git push``; the merge fetches all, writes the same state
files, ``git add``, ``git commit``, one push of main and the deletions.

Both sides are driven from this one Python process, one worker after the
other, with warm clones (a tick has run before), so the interpreter's start
(~0.2 s a process, paid by ``fleet run`` and by every CI job alike) is in
neither. The agents' own work (a model call) is not coordination and is
near zero on the offline provider.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
from benchlib import Stopwatch, git, log, median, result, workdir

from fleet import canonical
from fleet.commands.init import init
from fleet.commands.merge import merge
from fleet.commands.work import work
from fleet.git import Git
from fleet.workspace import private_repo

AGENTS_PER_WORKER = 4
SIZES = (1, 4, 16, 64)
DEFAULT_REPEAT = 1


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--sizes", default=None, help="comma-separated worker counts (default 1,4,16,64; --small: 1,4)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """``git daemon`` serving a folder of bare repositories on 127.0.0.1."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", f"--base-path={base}",
             "--listen=127.0.0.1", f"--port={self.port}", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("git daemon did not start")

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _world(root: Path, workers: int) -> Path:
    """A fleet with 4 agents per worker, so every worker has work."""
    repo = root / "fleet"
    init(repo)
    cfg_path = repo / "state" / "config.json"
    cfg = orjson.loads(cfg_path.read_bytes())
    names = [f"a{i:04d}" for i in range(workers * AGENTS_PER_WORKER)]
    cfg["agents"] = {a: {"priority": 0} for a in names}
    cfg_path.write_bytes(canonical.dumps(cfg))
    for a in names:
        (repo / "state" / "agents" / f"{a}.json").write_bytes(canonical.dumps(
            {"id": a, "name": a, "persona": f"{a} is a benchmark agent.", "bio": "", "interests": [],
             "karma": 0, "post_count": 0, "memory": []}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench world")
    return repo


def _tick_ours(repo: Path, url: str, workers: int) -> tuple[float, dict[str, dict[str, bytes]], dict[str, bytes]]:
    """One tick by fleet; returns the time, each worker's delta files and the merge's state files."""
    sw = Stopwatch()
    with sw:
        for i in range(1, workers + 1):
            work(repo, worker=i, workers=workers, remote=url)
        report = merge(private_repo(repo / ".git", "merge.git"), remote=url)
    deltas, state = merged_files(repo, report.commit, report.tick)
    return sw.times[0], deltas, state


def merged_files(repo: Path, commit: str, tick: int) -> tuple[dict[str, dict[str, bytes]], dict[str, bytes]]:
    """What a merged tick moved, for the floor to move the same bytes: each worker's
    delta files (from the ledger) and the state files the merge wrote."""
    g = Git(repo / ".git" / "fleet" / "merge.git")
    changed = g.changed(f"{commit}^", commit, ["."])
    blobs = g.cat_blobs([new for _, new, _ in changed if new != "0" * 40])
    state = {path: blobs[new] for _, new, path in changed if new != "0" * 40}
    deltas: dict[str, dict[str, bytes]] = {}
    for _, entry in _ledger_lines(g, commit, tick):
        body = orjson.loads(entry)
        deltas.setdefault(body["worker"], {})[f"deltas/{body['worker']}/{body['stream']}/{body['id']}.json"] = \
            canonical.dumps(body)
    return deltas, state


def _ledger_lines(g: Git, commit: str, tick: int) -> list[tuple[str, bytes]]:
    entries = g.ls_tree(commit, f"state/ledger/{tick}/")
    blobs = g.cat_blobs(list(entries.values()))
    return [(p, line) for p, sha in entries.items() for line in blobs[sha].splitlines()]


def _tick_floor(clones: list[Path], merger: Path, url: str, tick: int,
                deltas: dict[str, dict[str, bytes]], state: dict[str, bytes]) -> float:
    sw = Stopwatch()
    with sw:
        branches = []
        for i, clone in enumerate(clones, 1):
            name = f"w{i}"
            git(clone, "fetch", "-q", url, "+refs/heads/main:refs/remotes/origin/main")
            git(clone, "reset", "-q", "--hard", "refs/remotes/origin/main")
            for rel, data in deltas.get(name, {}).items():
                f = clone / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
            git(clone, "add", "-A", "-f", "deltas")
            git(clone, "commit", "-q", "-m", f"worker {name} tick {tick}")
            branch = f"floor/t{tick}/{name}"
            git(clone, "push", "-q", url, f"HEAD:refs/heads/{branch}")
            branches.append(branch)
        git(merger, "fetch", "-q", url, "+refs/heads/*:refs/remotes/origin/*")
        git(merger, "reset", "-q", "--hard", "refs/remotes/origin/main")
        for rel, data in state.items():
            f = merger / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        git(merger, "add", "-A", "state")
        git(merger, "commit", "-q", "-m", f"merge tick {tick}")
        git(merger, "push", "-q", "--atomic", url, "HEAD:refs/heads/main", *[f":refs/heads/{b}" for b in branches])
    return sw.times[0]


def _one_size(tmp: Path, workers: int, repeat: int) -> dict[str, Any]:
    root = tmp / f"w{workers}"
    root.mkdir()
    repo = _world(root, workers)
    served = root / "served"
    served.mkdir()
    git(root, "clone", "-q", "--bare", str(repo), str(served / "ours.git"))
    git(root, "clone", "-q", "--bare", str(repo), str(served / "floor.git"))
    daemon = Daemon(served)
    try:
        ours_url, floor_url = daemon.url("ours.git"), daemon.url("floor.git")
        clones = []
        for i in range(1, workers + 1):
            c = root / f"floor-w{i}"
            git(root, "clone", "-q", floor_url, str(c))
            clones.append(c)
        merger = root / "floor-merge"
        git(root, "clone", "-q", floor_url, str(merger))
        ours_times, floor_times = [], []
        for n in range(repeat + 1):  # the first tick warms caches and clones, and is not counted
            t, deltas, state = _tick_ours(repo, ours_url, workers)
            f = _tick_floor(clones, merger, floor_url, n + 1, deltas, state)
            if n:
                ours_times.append(t)
                floor_times.append(f)
            log(f"{workers} workers, tick {n + 1}: ours {t:.3f}s floor {f:.3f}s" + ("" if n else " (warm-up)"))
    finally:
        daemon.stop()
    ours, floor = median(ours_times), median(floor_times)
    return result("tick-overhead", ours, floor, "s", workers=workers, agents=workers * AGENTS_PER_WORKER,
                  goal=1.5, ours_per_worker_ms=round(1000 * ours / workers, 1),
                  floor_per_worker_ms=round(1000 * floor / workers, 1), transport="git daemon on 127.0.0.1")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([1, 4] if args.small else list(SIZES))
    repeat = args.repeat or (3 if args.small else 2)
    out = []
    with workdir(args.tmp, "fleet-bench-tick-", args.keep) as tmp:
        for w in sizes:
            out.append(_one_size(tmp, w, repeat))
    return out
