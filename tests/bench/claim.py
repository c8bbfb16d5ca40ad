"""claim: what fleet's task claim costs against Hive-Claw's one-file queue.

The floor is the simplest claim git can do, the one seed 001 describes: a
``tasks.json`` holding every task on one branch; a claimer fetches, resets,
marks the first pending task with ``json``, commits and pushes (a
non-fast-forward push is the compare-and-swap), and on a rejection backs off
with the same jittered doubling as fleet and tries again. Ours is
``fleet task claim`` (fencing token, schema check, one file per task, a
commit message that says who and why). Both are a Python process per claim on
its own clone, over ``git daemon``, so both pay for starting.

fleet's modules are byte-compiled first, as an installed package is (this
machine sets PYTHONDONTWRITEBYTECODE, which would make every claim compile
fleet from source and measure the compiler).

Three results: ``claim`` is one claimer taking tasks one after another (the
latency of an uncontended claim); ``claim-big`` is the same on a queue of
10,000 tasks (beads' figure for ``ready``); ``claim-contention`` is C
claimers started at once on C clones, each taking one task, timed until the
last is done.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib import Stopwatch, git, log, median, result, workdir
from tick_overhead import Daemon

from fleet.commands.init import init

DEFAULT_REPEAT = 3
SMALL_REPEAT = 1

FLOOR = r"""
import json, random, subprocess, sys, time
repo, agent = sys.argv[1], sys.argv[2]
def g(*a):
    return subprocess.run(["git", *a], cwd=repo, capture_output=True)
for attempt in range(400):
    g("fetch", "-q", "origin", "+refs/heads/queue:refs/remotes/origin/queue")
    g("reset", "-q", "--hard", "origin/queue")
    with open(repo + "/tasks.json") as f:
        tasks = json.load(f)
    t = next((t for t in tasks if t["status"] == "pending"), None)
    if t is None:
        sys.exit(3)
    t.update(status="in-progress", claimedBy=agent, claimedAt=time.time())
    with open(repo + "/tasks.json", "w") as f:
        json.dump(tasks, f, indent=2)
    g("commit", "-qam", "claim " + t["id"] + " by " + agent)
    if g("push", "-q", "origin", "HEAD:refs/heads/queue").returncode == 0:
        print(t["id"])
        sys.exit(0)
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** min(attempt, 6))))
sys.exit(1)
"""


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--claimers", type=int, default=None, help="concurrent claimers (default 16; --small 6)")
    p.add_argument("--sequential", type=int, default=None, help="claims in the uncontended run (default 12; --small 4)")
    p.add_argument("--big", type=int, default=None,
                   help="tasks in the big queue of the third result (default 10,000, beads' figure; --small 2,000)")


def _setup(root: Path, tasks: int, clones: int) -> tuple[Daemon, list[Path], list[Path]]:
    """A fleet with ``tasks`` tasks and the same tasks as one tasks.json; clones of each."""
    seed = root / "seed"
    init(seed)
    served = root / "served"
    served.mkdir()
    git(root, "clone", "-q", "--bare", str(seed), str(served / "ours.git"))
    items = root / "tasks.jsonl"
    items.write_text("".join(json.dumps({"id": f"job-{i:04d}", "title": f"job {i}"}) + "\n" for i in range(tasks)))
    subprocess.run([sys.executable, "-m", "fleet", "task", "add", "--file", str(items),
                    "--remote", str(served / "ours.git")], cwd=seed, check=True, capture_output=True)
    floor_seed = root / "floor-seed"
    floor_seed.mkdir()
    git(floor_seed, "init", "-q", "-b", "queue")
    (floor_seed / "tasks.json").write_text(json.dumps(
        [{"id": f"job-{i:04d}", "title": f"job {i}", "status": "pending", "claimedBy": None, "claimedAt": None}
         for i in range(tasks)], indent=2))
    git(floor_seed, "add", "-A")
    git(floor_seed, "commit", "-q", "-m", "tasks")
    git(root, "clone", "-q", "--bare", str(floor_seed), str(served / "floor.git"))
    daemon = Daemon(served)
    ours, floor = [], []
    for i in range(clones):
        o, f = root / f"ours-{i}", root / f"floor-{i}"
        git(root, "clone", "-q", daemon.url("ours.git"), str(o))
        git(root, "clone", "-q", "--branch", "queue", daemon.url("floor.git"), str(f))
        ours.append(o)
        floor.append(f)
    return daemon, ours, floor


def _ours(clone: Path, agent: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "fleet", "task", "claim", "-C", str(clone), "--as", agent,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _floor(clone: Path, agent: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", FLOOR, str(clone), agent],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _all(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    won = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"a claimer exited {p.returncode}: {err.decode(errors='replace')[-400:]}")
        text = out.decode()
        won.append(json.loads(text)["id"] if text.startswith("{") else text.strip())
    return won


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import compileall

    import fleet

    compileall.compile_dir(str(Path(fleet.__file__).parent), quiet=1)
    claimers = args.claimers or (6 if args.small else 16)
    sequential = args.sequential or (4 if args.small else 12)
    agents = ["ada", "basil", "cleo", "dara", "eli", "fen"]
    lat_ours, lat_floor, con_ours, con_floor = Stopwatch(), Stopwatch(), Stopwatch(), Stopwatch()
    for r in range(args.repeat):
        with workdir(args.tmp, "fleet-bench-claim-", args.keep) as root:
            log(f"run {r + 1}/{args.repeat}: {sequential} sequential claims, then {claimers} at once")
            daemon, ours, floor = _setup(root, sequential + claimers, claimers)
            try:
                for side, sw, start in (("ours", lat_ours, _ours), ("floor", lat_floor, _floor)):
                    clone = (ours if side == "ours" else floor)[0]
                    with sw:
                        won = [_all([start(clone, agents[i % 6])])[0] for i in range(sequential)]
                    assert len(set(won)) == sequential, (side, won)
                taken: dict[str, list[str]] = {}
                for side, sw, start, clones in (("ours", con_ours, _ours, ours), ("floor", con_floor, _floor, floor)):
                    with sw:
                        taken[side] = _all([start(c, agents[i % 6]) for i, c in enumerate(clones)])
                    if len(set(taken[side])) != claimers:
                        raise RuntimeError(f"{side}: a task was claimed twice: {sorted(taken[side])}")
            finally:
                daemon.stop()
    big = args.big or (2000 if args.small else 10000)
    big_ours, big_floor = Stopwatch(), Stopwatch()
    with workdir(args.tmp, "fleet-bench-claim-big-", args.keep) as root:
        log(f"{sequential} sequential claims on a queue of {big:,} tasks")
        daemon, ours, floor = _setup(root, big, 1)
        try:
            for start, clone in ((_ours, ours[0]), (_floor, floor[0])):
                _all([start(clone, "ada")])  # the first claim of a clone reads the whole queue (and fleet caches it)
            for r in range(args.repeat):
                for sw, start, clone in ((big_ours, _ours, ours[0]), (big_floor, _floor, floor[0])):
                    with sw:
                        for i in range(sequential):
                            _all([start(clone, agents[i % 6])])
        finally:
            daemon.stop()
    per = median(lat_ours.times) / sequential, median(lat_floor.times) / sequential
    return [
        result("claim", per[0], per[1], "s/claim", goal=1.5, claims=sequential, repeat=args.repeat,
               cpu_ours=round(median(lat_ours.cpu) / sequential, 4),
               cpu_floor=round(median(lat_floor.cpu) / sequential, 4)),
        result("claim-big", median(big_ours.times) / sequential, median(big_floor.times) / sequential, "s/claim",
               goal=1.5, tasks=big, claims=sequential, repeat=args.repeat,
               note="after each side's first claim on its clone (fleet's reads the whole queue once)"),
        result("claim-contention", median(con_ours.times), median(con_floor.times), "s", goal=1.5,
               claimers=claimers, per_claim_ours=round(median(con_ours.times) / claimers, 4),
               per_claim_floor=round(median(con_floor.times) / claimers, 4), repeat=args.repeat),
    ]
