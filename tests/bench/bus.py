"""bus: messages a second through fleet's message bus, from 1, 4 and 16 senders.

Each sender is a long-lived process on its own clone of one origin served by
``git daemon`` on 127.0.0.1; all are started, warmed up (each reads the
config once) and let go at the same moment, each sending its share of the
messages with ``fleet.bus.Bus.send`` (one file, one commit, one
compare-and-swap push on its own outbox branch), timed until the last is
done. ``ours`` is seconds per message (wall time over messages).

The floor is the queue's: the ceiling of serialised compare-and-swap pushes on
the same origin, measured in the same run (``git push --force-with-lease`` of a
commit adding one message file, one after another, to a branch of their own):
one over their median round trip, since no write that must be pushed can land
faster than its push. ``ratio`` is ours over that round trip, so below 1 is
faster than the ceiling of one contended branch (independent outboxes push in
parallel); the goal is at most 1.67 at 16 senders.

Afterwards every inbox is read from a fresh clone and each message sent is
checked to be there exactly once (``lost`` and ``doubled`` in the result).
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

from benchlib import git, log, median, result, workdir
from tick_overhead import Daemon

from fleet.commands.init import init

DEFAULT_REPEAT = 3
SMALL_REPEAT = 1
LEVELS = (1, 4, 16)

SENDER = r"""
import json, sys
from pathlib import Path
from fleet.bus import Bus, lane_of
from fleet.repo import FleetRepo
clone, tag, quota = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
bus = Bus(FleetRepo(clone))
agents = sorted(bus.cfg.agents)
lane_of(bus.repo)
print("ready", flush=True)
sys.stdin.readline()
sent = []
for i in range(quota):
    s = bus.send(tag, agents[i % len(agents)], "note", f"{tag} message {i}: a few words of text, as agents write")
    sent += [m["id"] for m in s.messages]
print(json.dumps(sent), flush=True)
"""


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--messages", type=int, default=None,
                   help="messages at each concurrency, shared by the senders (default 160; --small 48)")
    p.add_argument("--pushes", type=int, default=30, help="compare-and-swap pushes timed for the floor (default 30)")


def _race(procs: list[subprocess.Popen[str]]) -> tuple[float, list[list[str]]]:
    for p in procs:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            p.wait()
            raise RuntimeError(f"a sender did not start: {p.stderr.read()[-600:]}")  # type: ignore[union-attr]
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    outs = [p.communicate(timeout=1800) for p in procs]
    seconds = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise RuntimeError(f"a sender exited {p.returncode}: {err[-600:]}")
    return seconds, [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def _cas_pushes(root: Path, url: str, n: int) -> list[float]:
    """``n`` compare-and-swap pushes one after another on the bus's origin, each of a
    commit adding one message file (what a send pushes), to a branch of their own."""
    clone = root / f"cas-{time.monotonic_ns()}"
    git(root, "clone", "-q", url, str(clone))
    git(clone, "checkout", "-q", "--orphan", "cas")
    git(clone, "rm", "-rqf", ".")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    old, times = "", []
    for i in range(n):
        folder = clone / "to" / "basil"
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"id": f"m-cas-{i}", "ts": "2026-12-01T00:00:00.000000Z", "from": "ada", "to": "basil", "type": "note",
               "body": f"cas message {i}: a few words of text, as agents write"}
        (folder / f"m-cas-{i}.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        git(clone, "add", "-A")
        git(clone, "commit", "-qm", f"cas {i}")
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


def _delivered(root: Path, url: str) -> Counter[str]:
    """Each message id as often as a fresh clone finds it in the inboxes."""
    from fleet.bus import Bus
    from fleet.repo import FleetRepo

    reader = root / f"reader-{time.monotonic_ns()}"
    git(root, "clone", "-q", url, str(reader))
    bus = Bus(FleetRepo(reader))
    boxes = bus.inboxes(sorted(bus.cfg.agents))
    shutil.rmtree(reader, ignore_errors=True)
    return Counter(m.id for box in boxes.values() for m in box.messages)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import compileall

    import fleet

    compileall.compile_dir(str(Path(fleet.__file__).parent), quiet=1)
    total = args.messages or (48 if args.small else 160)
    levels = [c for c in LEVELS if c <= total]
    rtts: list[float] = []
    per_s: dict[int, list[float]] = {c: [] for c in levels}
    sent_all: list[str] = []
    with workdir(args.tmp, "fleet-bench-bus-", args.keep) as root:
        seed = root / "seed"
        init(seed)
        served = root / "served"
        served.mkdir()
        git(root, "clone", "-q", "--bare", str(seed), str(served / "bus.git"))
        daemon = Daemon(served)
        try:
            url = daemon.url("bus.git")
            clones = []
            for i in range(max(levels)):
                clones.append(root / f"clone-{i}")
                git(root, "clone", "-q", url, str(clones[-1]))
            for r in range(args.repeat):
                rtts += _cas_pushes(root, url, args.pushes)
                for c in levels:
                    quota = total // c
                    log(f"run {r + 1}/{args.repeat}: {c} sender(s) x {quota} messages")
                    procs = [subprocess.Popen([sys.executable, "-c", SENDER, str(clones[i]), f"s{i:02d}", str(quota)],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True) for i in range(c)]
                    sec, sent = _race(procs)
                    per_s[c].append(sec / (quota * c))
                    sent_all += [i for s in sent for i in s]
            rtts += _cas_pushes(root, url, args.pushes)
            found = _delivered(root, url)
        finally:
            daemon.stop()
    floor = median(rtts)
    lost = sum(1 for i in sent_all if found[i] == 0)
    doubled = sum(1 for n in found.values() if n > 1) + len(sent_all) - len(set(sent_all))
    out = []
    for c in levels:
        per = median(per_s[c])
        out.append(result(
            f"bus-{c}", per, floor, "s/message", goal=1.67 if c == max(levels) else None,
            senders=c, messages=total // c * c, repeat=args.repeat, messages_per_s=round(1 / per, 2),
            ceiling_per_s=round(1 / floor, 2), push_rtt_median=round(floor, 4),
            push_rtt_p90=round(sorted(rtts)[int(len(rtts) * 0.9)], 4), lost=lost, doubled=doubled,
        ))
    return out
