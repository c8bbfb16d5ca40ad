"""growth: what a fleet's history costs after 1,000 ticks, against the same fleet at tick 100.

A fleet of six agents runs 1,000 real ticks (deltas committed on worker
branches, ``fleet merge`` publishing each tick), each agent changing its own
document every tick, so that the world itself does not grow and what is
measured is fleet's own weight: the ledger, quarantine and records. At ticks
100, 250, 500 and 1,000 it measures the entries in main's tree, the size of
the repository (packed), a fresh shallow clone (what a worker fetches) and
``fleet replay --check`` from genesis. One line per measure and point, each
against a floor from the same run:

- ``growth-tree``: entries in main's tree, against tick 100 (goal: no
  growth, ratio 1.0).
- ``growth-size``: packed bytes added per tick since genesis, against the
  same at tick 100 (goal at most 1.2: history grows linearly, by what the
  ticks change, never by what they carry along).
- ``growth-fetch``: a shallow clone of main, against a shallow clone of a
  repository holding main's tree in one commit and no history, cloned in
  turn (goal at most 1.2, at every point: history costs a worker nothing).
- ``growth-replay``: replay time per tick, against the same at tick 100
  (goal at most 1.2: a replay is linear in the ticks, not worse; measured
  per tick, so no checkpoint is needed while it stays so).

The replay line carries ``cpu_ratio`` (its process and git's), since wall
time is at the mercy of a busy machine (a clone's CPU is mostly in a
grandchild process and is not counted); each line carries
``build_per_tick``, what a tick of the run itself cost.
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


def tick_of_own_changes(git: Git, repo: Path, tick: int, agents: Any = None) -> None:
    """One tick: each agent on its own worker changes its own document, then the merge."""
    for i, agent in enumerate(AGENTS if agents is None else agents):
        worker = f"w{i % 3 + 1}"
        body = delta_mod.make(tick=tick, worker=worker, stream=f"s{i}", agent=agent,
                              ops=[Op("incr", "agents", agent, ("karma",), 1),
                                   Op("set", "agents", agent, ("bio",), f"at tick {tick}")])
        ref = f"refs/heads/fleet/t{tick}/{worker}"
        old = git.rev_parse(ref)
        commit = commit_deltas(git, git.rev_parse("refs/heads/main") or "", tick, worker, [body], parent=old)
        assert stage_branch(git, tick, worker, commit, old)
    merge(repo, tick=tick)


def _packed(repo: Path) -> int:
    """The repository's objects, packed (bytes)."""
    Git(repo).run("gc", "--quiet", "--prune=now")
    return sum(p.stat().st_size for p in (repo / ".git" / "objects").rglob("*") if p.is_file())


def _point(repo: Path, tmp: Path, tick: int, repeat: int, genesis: int, built: float) -> dict[str, Any]:
    git = Git(repo)
    entries = len(git.text("ls-tree", "-r", "--name-only", "main").splitlines())
    size = _packed(repo)
    # The floor of a fetch: the same tree in a repository of one commit, cloned in
    # turn with main, so both see the same load; the ratio shows what history adds.
    flat = tmp / f"flat-{tick}"
    git.run("init", "--quiet", "--bare", str(flat))
    bare = Git(flat)
    bare.run("fetch", "--quiet", "--no-tags", (repo / ".git").as_uri(), "main")
    bare.run("update-ref", "refs/heads/main",
             bare.text("-c", "user.name=b", "-c", "user.email=b@x", "commit-tree", "FETCH_HEAD^{tree}", "-m", "flat"))
    bare.run("gc", "--quiet", "--prune=now")
    fetch, floor = Stopwatch(), Stopwatch()
    for n in range(repeat):
        for sw, url in ((fetch, (repo / ".git").as_uri()), (floor, flat.as_uri())):
            dest = tmp / f"clone-{tick}-{n}"
            with sw:
                subprocess.run(["git", "clone", "--quiet", "--depth", "1", "-b", "main", url, str(dest)], check=True)
            subprocess.run(["rm", "-rf", str(dest)], check=True)
    subprocess.run(["rm", "-rf", str(flat)], check=True)
    rebuild = Stopwatch()
    with rebuild:
        report = replay(repo)
    assert report.ok, report.first_difference
    return {"tick": tick, "entries": entries, "bytes": size, "bytes_per_tick": (size - genesis) / tick,
            "fetch": median(fetch.times), "fetch_floor": median(floor.times),
            "replay": rebuild.times[0], "replay_per_tick": rebuild.times[0] / tick,
            "replay_cpu_per_tick": rebuild.cpu[0] / tick,
            "build_per_tick": built}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    ticks = args.ticks or (200 if args.small else 1000)
    marks = sorted({max(1, ticks // 10), ticks // 4, ticks // 2, ticks})
    points: list[dict[str, Any]] = []
    with workdir(args.tmp, "fleet-bench-growth-", args.keep) as tmp:
        repo = tmp / "fleet"
        init(repo)
        git = Git(repo)
        git.run("checkout", "--quiet", "--detach")  # main moves by the merge alone
        git.run("config", "gc.autoDetach", "false")  # a merge's gc --auto ends before the bench's own gc starts
        genesis = _packed(repo)
        started = since = time.perf_counter()
        done = 0
        for t in range(1, ticks + 1):
            tick_of_own_changes(git, repo, t)
            if t in marks:
                built = (time.perf_counter() - since) / (t - done)
                points.append(_point(repo, tmp, t, args.repeat, genesis, built))
                p = points[-1]
                log(f"tick {t}: {p['entries']} entries, {p['bytes'] / 1e6:.2f} MB packed "
                    f"({p['bytes_per_tick'] / 1e3:.2f} KB a tick), shallow clone {p['fetch']:.3f}s "
                    f"(of one commit of the same tree {p['fetch_floor']:.3f}s), replay "
                    f"{p['replay']:.2f}s ({p['replay_per_tick']:.4f}s a tick), building {built:.3f}s a tick "
                    f"({time.perf_counter() - started:.0f}s so far)")
                since, done = time.perf_counter(), t
    # One line per measure and point, each against the same measure at the first point (the floor).
    first = points[0]
    out: list[dict[str, Any]] = []
    for p in points:
        common = {"ticks": p["tick"], "from_tick": first["tick"], "bytes": p["bytes"],
                  "build_per_tick": round(p["build_per_tick"], 4)}
        if p is first:  # the fetch has a floor of its own, in the same run
            out.append(result("growth-fetch", p["fetch"], p["fetch_floor"], "s", goal=1.2, **common))
            continue
        out += [
            result("growth-tree", p["entries"], first["entries"], "tree entries", goal=1.0, **common),
            result("growth-size", p["bytes_per_tick"], first["bytes_per_tick"], "packed bytes per tick", goal=1.2,
                   **common),
            result("growth-fetch", p["fetch"], p["fetch_floor"], "s", goal=1.2, **common),
            result("growth-replay", p["replay_per_tick"], first["replay_per_tick"], "s per tick", goal=1.2,
                   cpu_ratio=round(p["replay_cpu_per_tick"] / first["replay_cpu_per_tick"], 3), **common),
        ]
    return out
