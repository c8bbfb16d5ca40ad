"""growth: what a fleet's history costs after 1,000 ticks, against the same fleet at tick 100.

A fleet of six agents runs 1,000 real ticks (deltas committed on worker
branches, ``fleet merge`` publishing each tick), each agent changing its own
document every tick, so that the world itself does not grow and what is
measured is fleet's own weight: the ledger, quarantine and records. At ticks
100, 250, 500 and 1,000 it measures the entries in main's tree, the size of
the repository (packed), a fresh shallow clone (what a worker fetches) and
``fleet replay --check`` from genesis. Each line compares the last point with
the first (the floor, from the same run):

- ``growth-tree``: entries in main's tree (goal: no growth, ratio 1.0).
- ``growth-fetch``: a shallow clone of main (goal at most 1.2).
- ``growth-replay``: replay time per tick (goal at most 1.2: a replay is
  linear in the ticks, not worse).

The repository's packed size at each point is reported beside: history
grows, as it must; the tree a worker fetches must not.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlib import Stopwatch, log, median, result, workdir

from fleet import delta as delta_mod
from fleet.commands.init import init
from fleet.commands.merge import merge
from fleet.commands.replay import replay
from fleet.delta import Op
from fleet.git import Git
from fleet.worker import commit_deltas, stage_branch

DEFAULT_REPEAT = 3
SMALL_REPEAT = 1
AGENTS = ("ada", "basil", "cleo", "dara", "eli", "fen")


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--ticks", type=int, default=None, help="ticks in all (default 1000; --small 200)")


def _tick(git: Git, repo: Path, tick: int) -> None:
    """One tick: each agent on its own worker changes its own document, then the merge."""
    for i, agent in enumerate(AGENTS):
        worker = f"w{i % 3 + 1}"
        body = delta_mod.make(tick=tick, worker=worker, stream=f"s{i}", agent=agent,
                              ops=[Op("incr", "agents", agent, ("karma",), 1),
                                   Op("set", "agents", agent, ("bio",), f"at tick {tick}")])
        ref = f"refs/heads/fleet/t{tick}/{worker}"
        old = git.rev_parse(ref)
        commit = commit_deltas(git, git.rev_parse("refs/heads/main") or "", tick, worker, [body], parent=old)
        assert stage_branch(git, tick, worker, commit, old)
    merge(repo, tick=tick)


def _point(repo: Path, tmp: Path, tick: int, repeat: int) -> dict[str, Any]:
    git = Git(repo)
    entries = len(git.text("ls-tree", "-r", "--name-only", "main").splitlines())
    git.run("gc", "--quiet", "--prune=now")
    size = sum(p.stat().st_size for p in (repo / ".git" / "objects").rglob("*") if p.is_file())
    fetch = Stopwatch()
    for n in range(repeat):
        dest = tmp / f"clone-{tick}-{n}"
        with fetch:
            subprocess.run(["git", "clone", "--quiet", "--depth", "1", "-b", "main", (repo / ".git").as_uri(),
                            str(dest)], check=True)
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    rebuild = Stopwatch()
    with rebuild:
        report = replay(repo)
    assert report.ok, report.first_difference
    return {"tick": tick, "entries": entries, "bytes": size, "fetch": median(fetch.times),
            "replay": rebuild.times[0], "replay_per_tick": rebuild.times[0] / tick}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    ticks = args.ticks or (200 if args.small else 1000)
    marks = sorted({max(1, ticks // 10), ticks // 4, ticks // 2, ticks})
    points: list[dict[str, Any]] = []
    with workdir(args.tmp, "fleet-bench-growth-", args.keep) as tmp:
        repo = tmp / "fleet"
        init(repo)
        git = Git(repo)
        git.run("checkout", "--quiet", "--detach")  # main moves by the merge alone
        started = time.perf_counter()
        for t in range(1, ticks + 1):
            _tick(git, repo, t)
            if t in marks:
                points.append(_point(repo, tmp, t, args.repeat))
                p = points[-1]
                log(f"tick {t}: {p['entries']} entries, {p['bytes'] / 1e6:.2f} MB packed, shallow clone "
                    f"{p['fetch']:.3f}s, replay {p['replay']:.2f}s ({time.perf_counter() - started:.0f}s so far)")
    first, last = points[0], points[-1]
    curve = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()} for p in points]
    common = {"ticks": ticks, "from_tick": first["tick"], "points": curve}
    return [
        result("growth-tree", last["entries"], first["entries"], "tree entries", goal=1.0, **common),
        result("growth-fetch", last["fetch"], first["fetch"], "s", goal=1.2, **common),
        result("growth-replay", last["replay_per_tick"], first["replay_per_tick"], "s per tick", goal=1.2, **common),
    ]
