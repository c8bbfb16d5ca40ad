"""claim: what fleet's task claim costs against Hive-Claw's one-file queue.

The floor is the simplest claim git can do, the one seed 001 describes: a
``tasks.json`` holding every task on one branch; a claimer fetches, resets,
marks the first pending task with ``json``, commits and pushes (a
non-fast-forward push is the compare-and-swap), and on a rejection backs off
with the same jittered doubling as fleet and tries again. Ours is
``fleet task claim`` (fencing token, schema check, one file per task, a
commit message that says who and why, pushed to the task's own claim ref by
compare-and-swap: claims of different tasks do not race). Both are a Python
process per claim on its own clone, over ``git daemon``, so both pay for starting.

fleet's modules are byte-compiled first, as an installed package is (this
machine sets PYTHONDONTWRITEBYTECODE, which would make every claim compile
fleet from source and measure the compiler).

Three results: ``claim`` is one claimer taking tasks one after another (the
latency of an uncontended claim); ``claim-big`` is the same on a queue of
10,000 tasks (beads' figure for ``ready``); ``claim-contention`` is C
claimers started at once on C clones, each taking one task, timed until the
last is done.

Then throughput, on a queue of 1,000 tasks through ``git daemon``
(``claim-throughput-C`` for C = 1, 4, 16 claimers): C long-lived processes,
each on its own clone, started, warmed up (fleet's reads the queue once) and
then let go at the same moment, each taking its share of the claims; timed
until the last is done. Its floor is the ceiling of the claim path, measured in
the same run on the same origin: compare-and-swap pushes made one after
another (``git push --force-with-lease`` of a commit changing one task file),
one over their median round trip, since no claim can land faster than its
push. ``ours`` is seconds per claim (wall time over claims), ``floor`` the
median push, so ``ratio`` is how far below the ceiling fleet claims (1.67 is
60% of it). Beside it, at the same concurrency, seed 001's naive scheme as
written (one ``tasks.json``; ``git pull --rebase``, claim the first pending
task, commit, push; on a rejection pull --rebase again, taking the remote's
file and claiming again on a conflict), with the same backoff as fleet. Both
sides' claims are checked: a task claimed twice is counted and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
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


# A long-lived claimer for the throughput results: warms up, says "ready",
# waits for a line on stdin, takes its share of the claims one after another.
THROUGHPUT_OURS = r"""
import json, sys, time
from pathlib import Path
from fleet.commands import task as task_cmd
from fleet.repo import FleetRepo
from fleet.store import BranchStore
from fleet.tasks import TaskQueue
clone, agent, quota = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
count = int(sys.argv[4]) if len(sys.argv) > 4 else 1  # tasks a claim takes (claim --count)
TaskQueue(FleetRepo(clone)).load()  # the first read of a clone reads the whole queue (and caches it)
pushes = 0
publish = BranchStore.publish
def counted(self, *args, **kw):
    global pushes
    pushes += 1
    return publish(self, *args, **kw)
BranchStore.publish = counted
print("ready", flush=True)
sys.stdin.readline()
won = []
while len(won) < quota:
    if count == 1:
        won.append(task_cmd.claim(clone, agent)["id"])
    else:
        won += [t["id"] for t in task_cmd.claim_many(clone, agent, min(count, quota - len(won)))]
print(json.dumps({"won": won, "pushes": pushes}), flush=True)
"""

# Seed 001's queue as it describes it: pull --rebase, claim, commit, push, and on
# a rejection pull --rebase again (on a conflict: the remote's tasks.json, claimed again).
THROUGHPUT_NAIVE = r"""
import json, random, subprocess, sys, time
repo, agent, quota = sys.argv[1], sys.argv[2], int(sys.argv[3])
def g(*a):
    return subprocess.run(["git", *a], cwd=repo, capture_output=True)
def take():
    with open(repo + "/tasks.json") as f:
        tasks = json.load(f)
    t = next((t for t in tasks if t["status"] == "pending"), None)
    if t is None:
        sys.exit("no pending task left")
    t.update(status="in-progress", claimedBy=agent, claimedAt=time.time())
    with open(repo + "/tasks.json", "w") as f:
        json.dump(tasks, f, indent=2)
    return t["id"]
print("ready", flush=True)
sys.stdin.readline()
won, pushes = [], 0
while len(won) < quota:
    g("pull", "-q", "--rebase", "origin", "queue")
    tid = take()
    g("commit", "-qam", "claim " + tid + " by " + agent)
    for attempt in range(400):
        pushes += 1
        if g("push", "-q", "origin", "HEAD:refs/heads/queue").returncode == 0:
            won.append(tid)
            break
        time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** min(attempt, 6))))
        if g("pull", "-q", "--rebase", "origin", "queue").returncode:
            # both claimed the same task: take the remote's file (in a rebase, "ours" is
            # the upstream) and claim again on it
            g("checkout", "--ours", "tasks.json")
            tid = take()
            g("add", "tasks.json")
            g("-c", "core.editor=true", "rebase", "--continue")
    else:
        sys.exit("gave up after 400 pushes")
print(json.dumps({"won": won, "pushes": pushes}), flush=True)
"""

LEVELS = (1, 4, 16)
THROUGHPUT_TASKS = 1000


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--claimers", type=int, default=None, help="concurrent claimers (default 16; --small 6)")
    p.add_argument("--sequential", type=int, default=None, help="claims in the uncontended run (default 12; --small 4)")
    p.add_argument("--big", type=int, default=None,
                   help="tasks in the big queue of the third result (default 10,000, beads' figure; --small 2,000)")
    p.add_argument("--throughput-claims", type=int, default=None,
                   help="claims at each concurrency of the throughput results, shared by the claimers "
                        "(default 96; --small 32)")
    p.add_argument("--pushes", type=int, default=30,
                   help="compare-and-swap pushes timed for the throughput floor (default 30)")
    p.add_argument("--only-throughput", action="store_true", help="only the throughput results")
    p.add_argument("--no-throughput", action="store_true",
                   help="only claim, claim-big and claim-contention (an A/B of one claim's cost, quicker)")
    p.add_argument("--count", type=int, default=4,
                   help="tasks each claim takes in the batch throughput result (claim --count; default 4)")
    p.add_argument("--batch-claims", type=int, default=None,
                   help=f"claims per run of the batch throughput result at {max(LEVELS)} claimers "
                        "(default 256; --small 64)")


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


def _racer(script: str, clone: Path, agent: str, quota: int, count: int = 1) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, str(clone), agent, str(quota), str(count)],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _race(procs: list[subprocess.Popen[str]]) -> tuple[float, list[dict[str, Any]]]:
    """Wait until every claimer is ready, let them all go at once; the wall time until
    the last is done, and what each claimed."""
    for p in procs:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            p.wait()
            raise RuntimeError(f"a claimer did not start: {p.stderr.read()[-600:]}")  # type: ignore[union-attr]
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    outs = [p.communicate(timeout=1800) for p in procs]
    seconds = time.perf_counter() - t0
    for p, (out, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"a claimer exited {p.returncode}: {err[-600:]}")
    return seconds, [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def _cas_pushes(root: Path, url: str, n: int) -> list[float]:
    """``n`` compare-and-swap pushes one after another on the queue's origin, each of
    a commit changing one task file (what a claim pushes), to a branch of their
    own; the round trip of each."""
    clone = root / f"cas-{time.monotonic_ns()}"
    git(root, "clone", "-q", url, str(clone))
    git(clone, "fetch", "-q", "origin", "+refs/heads/fleet/tasks:refs/remotes/origin/fleet/tasks")
    git(clone, "checkout", "-q", "-B", "cas", "origin/fleet/tasks")
    rel = git(clone, "ls-files", "tasks").decode().splitlines()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    doc = json.loads((clone / rel).read_text())
    old, times = "", []
    for i in range(n):
        (clone / rel).write_text(json.dumps(dict(doc, updated_at=f"cas {i}"), indent=2, sort_keys=True) + "\n")
        git(clone, "commit", "-qam", f"cas {i}")
        new = git(clone, "rev-parse", "HEAD").decode().strip()
        t0 = time.perf_counter()
        p = subprocess.run(["git", "push", "--porcelain", "--quiet", f"--force-with-lease=refs/heads/floor/cas:{old}",
                            "origin", f"{new}:refs/heads/floor/cas"], cwd=clone, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
        if p.returncode:
            raise RuntimeError(f"a compare-and-swap push failed: {p.stderr.decode(errors='replace')}")
        old = new
    git(clone, "push", "-q", "origin", ":refs/heads/floor/cas")
    shutil.rmtree(clone, ignore_errors=True)
    return times


def _throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    """claim-throughput-C for C in LEVELS: see the module's docstring."""
    total = args.throughput_claims or (32 if args.small else 96)
    levels = [c for c in LEVELS if c <= total]
    agents = ["ada", "basil", "cleo", "dara", "eli", "fen"]
    rtts: list[float] = []
    ours_s: dict[int, list[float]] = {c: [] for c in levels}
    naive_s: dict[int, list[float]] = {c: [] for c in levels}
    pushes: dict[str, dict[int, int]] = {"ours": {c: 0 for c in levels}, "naive": {c: 0 for c in levels}}
    won: dict[str, list[tuple[str, str]]] = {"ours": [], "naive": [], "batch": []}  # (task, claimer)
    if args.repeat * sum(total // c * c for c in levels) > THROUGHPUT_TASKS:
        raise SystemExit(f"claim: {args.repeat} x {total} claims at {len(levels)} concurrencies do not fit "
                         f"in a queue of {THROUGHPUT_TASKS}; lower --repeat or --throughput-claims")
    wide = max(levels)
    batch_total = (args.batch_claims or (64 if args.small else 256)) // wide * wide
    batch_s: list[float] = []
    batch_pushes = 0
    if args.repeat * batch_total > THROUGHPUT_TASKS:
        raise SystemExit(f"claim: {args.repeat} x {batch_total} batch claims do not fit in a queue of "
                         f"{THROUGHPUT_TASKS}; lower --repeat or --batch-claims")
    with workdir(args.tmp, "fleet-bench-claim-throughput-", args.keep) as root:
        log(f"throughput: a queue of {THROUGHPUT_TASKS:,} tasks, {total} claims at each of {levels} claimers")
        daemon, ours, naive = _setup(root, THROUGHPUT_TASKS, max(levels))
        # the same queue again, for the claims that take several tasks a push (claim --count)
        git(root, "clone", "-q", "--bare", str(root / "served" / "ours.git"), str(root / "served" / "batch.git"))
        batch = []
        for i in range(wide):
            git(root, "clone", "-q", daemon.url("batch.git"), str(root / f"batch-{i}"))
            batch.append(root / f"batch-{i}")
        try:
            for c in naive:
                git(c, "config", "pull.rebase", "true")
            for r in range(args.repeat):
                rtts += _cas_pushes(root, daemon.url("ours.git"), args.pushes)
                for c in levels:
                    quota = total // c
                    log(f"run {r + 1}/{args.repeat}: {c} claimer(s) x {quota} claims, ours then naive")
                    sec, res = _race([_racer(THROUGHPUT_OURS, ours[i], agents[i % 6], quota) for i in range(c)])
                    ours_s[c].append(sec / (quota * c))
                    pushes["ours"][c] += sum(x["pushes"] for x in res)
                    won["ours"] += [(t, f"ours-{i}") for i, x in enumerate(res) for t in x["won"]]
                    sec, res = _race([_racer(THROUGHPUT_NAIVE, naive[i], f"c{i:02d}", quota) for i in range(c)])
                    naive_s[c].append(sec / (quota * c))
                    pushes["naive"][c] += sum(x["pushes"] for x in res)
                    won["naive"] += [(t, f"c{i:02d}") for i, x in enumerate(res) for t in x["won"]]
                quota = batch_total // wide
                log(f"run {r + 1}/{args.repeat}: {wide} claimer(s) x {quota} claims, {args.count} a push")
                sec, res = _race([_racer(THROUGHPUT_OURS, batch[i], agents[i % 6], quota, args.count)
                                  for i in range(wide)])
                batch_s.append(sec / batch_total)
                batch_pushes += sum(x["pushes"] for x in res)
                won["batch"] += [(t, f"batch-{i}") for i, x in enumerate(res) for t in x["won"]]
            rtts += _cas_pushes(root, daemon.url("ours.git"), args.pushes)
            doubles = _double_claims(root, won)
        finally:
            daemon.stop()
    floor = median(rtts)
    out = []
    for c in levels:
        claims = total // c * c * args.repeat
        per, naive_per = median(ours_s[c]), median(naive_s[c])
        out.append(result(
            f"claim-throughput-{c}", per, floor, "s/claim", goal=1.67 if c == max(levels) else None,
            goal_vs_naive=3.0 if c == max(levels) else None,
            claimers=c, tasks=THROUGHPUT_TASKS, claims=total // c * c, repeat=args.repeat,
            claims_per_s=round(1 / per, 2), ceiling_per_s=round(1 / floor, 2),
            share_of_ceiling=round(floor / per, 3), push_rtt_median=round(floor, 4),
            push_rtt_p90=round(sorted(rtts)[int(len(rtts) * 0.9)], 4),
            naive_claims_per_s=round(1 / naive_per, 2), vs_naive=round(naive_per / per, 2),
            pushes_per_claim=round(pushes["ours"][c] / claims, 2),
            naive_pushes_per_claim=round(pushes["naive"][c] / claims, 2),
            double_claims=doubles["ours"], naive_double_claims=doubles["naive"],
        ))
    per, naive_per = median(batch_s), median(naive_s[wide])
    out.append(result(
        f"claim-throughput-{wide}-count{args.count}", per, floor, "s/claim", goal=1.67,
        claimers=wide, count=args.count, tasks=THROUGHPUT_TASKS, claims=batch_total, repeat=args.repeat,
        claims_per_s=round(1 / per, 2), ceiling_per_s=round(1 / floor, 2), share_of_ceiling=round(floor / per, 3),
        push_rtt_median=round(floor, 4), naive_claims_per_s=round(1 / naive_per, 2),
        vs_naive=round(naive_per / per, 2), pushes_per_claim=round(batch_pushes / (batch_total * args.repeat), 2),
        double_claims=doubles["batch"],
        note=f"each claim takes up to {args.count} ready tasks in one push (fleet task claim --count); "
             "the naive scheme beside it claims one task a push, as seed 001 describes",
    ))
    return out


def _double_claims(root: Path, won: dict[str, list[tuple[str, str]]]) -> dict[str, int]:
    """Claims of a task someone else also claimed, per side: from what the claimers
    said, and from each origin (fleet's history: claim commits per task; the naive
    tasks.json: the claimer it names)."""
    out = {}
    for side, pairs in won.items():
        said = len(pairs) - len({t for t, _ in pairs})
        if side in ("ours", "batch"):  # the branch and the claim refs it has not merged yet
            bare = root / "served" / f"{side}.git"
            refs = git(bare, "for-each-ref", "--format=%(refname)", "refs/heads/fleet/tasks-claims/").decode().split()
            subjects = git(bare, "log", "--format=%s", "refs/heads/fleet/tasks", *refs).decode()
            per = Counter(line.split()[2] for line in subjects.splitlines() if line.startswith("task claim "))
            recorded = sum(n - 1 for n in per.values())
        else:
            tasks = json.loads(git(root / "served" / "floor.git", "show", "queue:tasks.json"))
            holder = {t["id"]: t["claimedBy"] for t in tasks if t["status"] == "in-progress"}
            recorded = sum(1 for t, who in pairs if holder.get(t) != who) + abs(len(holder) - len(pairs))
        out[side] = max(said, recorded)
    return out


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import compileall

    import fleet

    compileall.compile_dir(str(Path(fleet.__file__).parent), quiet=1)
    if args.only_throughput:
        return _throughput(args)
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
        result("claim", per[0], per[1], "s/claim", goal=1.3, claims=sequential, repeat=args.repeat,
               cpu_ours=round(median(lat_ours.cpu) / sequential, 4),
               cpu_floor=round(median(lat_floor.cpu) / sequential, 4)),
        result("claim-big", median(big_ours.times) / sequential, median(big_floor.times) / sequential, "s/claim",
               goal=1.5, tasks=big, claims=sequential, repeat=args.repeat,
               note="after each side's first claim on its clone (fleet's reads the whole queue once)"),
        result("claim-contention", median(con_ours.times), median(con_floor.times), "s", goal=1.5,
               claimers=claimers, per_claim_ours=round(median(con_ours.times) / claimers, 4),
               per_claim_floor=round(median(con_floor.times) / claimers, 4), repeat=args.repeat),
        *([] if args.no_throughput else _throughput(args)),
    ]
