"""bigworld: a world the size of Rappterbook's, the largest deployment in the seeds.

138 agents, 11,434 posts, 52,842 comments, 20,000 reactions and 1,500 follows
at tick 488 (about 86,000 files, the size at which the defects were found), in
the example world's schemas with its big collections sharded. Each line
measures fleet against a floor in the same run:

- ``bigworld-validate``: ``fleet validate`` on the checkout, against a plain
  read, parse (orjson) and jsonschema-rs check of the same files, one
  validator per schema compiled once, in a process of its own as well.
- ``bigworld-worker``: a fresh worker (``fleet work`` in a new shallow
  checkout, as a runner has, on the offline provider) against the
  checkout alone (``git clone --depth 1``), over ``git daemon``; the objects
  each downloaded are reported beside. The world's main has its field
  index beside it, as every merge publishes it (fleet.fieldindex); the
  line says whether the worker read it (``index``).
- ``bigworld-replay``: ``fleet replay --check`` of a history in which a
  person's commit seeds the world and a few ticks follow, against the same
  read, parse and schema check of every document as for validate (replay
  must judge every document the seeding commit brought in).

- ``bigworld-tick``: a whole tick of the world's 138 agents, coalesced as on
  Actions: ``TICK_WORKERS`` ``fleet work --outbox`` processes, then ``fleet
  merge --inbox``, each a process of its own in one runner with warm caches
  (a tick runs first to warm them and is not counted), each timed from its
  start to its end (the small process that measures its memory is not). The
  floor is the same tick by the simplest means, the issue's "plain read and
  parse of every document": each worker a ``git fetch``, its checkout brought
  to main and every document read and parsed (orjson), its delta files
  written; then the merge's floor: fetch, reset, every delta parsed with
  orjson, the merged state files written, ``git add``, ``git commit`` and one
  push. Beside it, ``git_floor``: raw git moving the same bytes alone (scale's
  ``tick_floor``: the workers only fetch, nothing reads the world), and
  ``vs_git``, ours over it: a bound no worker reaches, since building 69
  prompts from 86,000 documents is work it does not do (earlier sessions
  judged the goal against it; see the README's performance section).
- ``bigworld-memory-worker`` and ``bigworld-memory-merge``: the peak resident
  memory (``ru_maxrss`` from ``wait4``, the process and the git it ran) of the
  largest worker and of the merge in those ticks, against a fresh process
  that reads and parses every document of the world into memory (orjson).

fleet's modules are byte-compiled first, as an installed package is (as
claim does: this machine sets PYTHONDONTWRITEBYTECODE, which would make every
fleet process compile fleet from source and measure the compiler).

``--small`` builds a tenth of the world.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import Stopwatch, git, log, median, result, workdir
from scale import tick_floor
from tick_overhead import Daemon, merged_files

from fleet import canonical, fieldindex
from fleet.commands.init import init
from fleet.git import Git
from fleet.state import GitSnapshot
from fleet.workspace import private_repo
from fleet.world import load as load_world

DEFAULT_REPEAT = 3
SMALL_REPEAT = 1
TICK_WORKERS = 2
SIZES = {"agents": 138, "posts": 11_434, "comments": 52_842, "reactions": 20_000, "follows": 1_500}
TICK = 488
KINDS = ("like", "insight", "disagree", "laugh")
WORDS = ("git", "merge", "agent", "fleet", "tick", "delta", "schema", "world", "queue", "lease", "fence",
         "prompt", "model", "cache", "clock", "budget", "review", "test", "ship", "idea")

FLOOR = r"""
import json, sys, time
from pathlib import Path
import orjson, jsonschema_rs
root = Path(sys.argv[1])
config = orjson.loads((root / "state/config.json").read_bytes())
validators = {}
for name, coll in config["collections"].items():
    validators[name] = jsonschema_rs.validator_for(orjson.loads((root / "schemas" / coll["schema"]).read_bytes()))
bad = n = 0
for p in (root / "state").rglob("*.json"):
    rel = p.relative_to(root).parts
    doc = orjson.loads(p.read_bytes())
    n += 1
    if len(rel) >= 3 and rel[1] in validators and not validators[rel[1]].is_valid(doc):
        bad += 1
for p in (root / "schemas").glob("*.json"):
    jsonschema_rs.validator_for(orjson.loads(p.read_bytes()))
    n += 1
print(json.dumps({"checked": n, "bad": bad}))
"""


READ_FLOOR = r"""
import sys, orjson
from pathlib import Path
docs = {str(p): orjson.loads(p.read_bytes()) for p in Path(sys.argv[1], "state").rglob("*.json")}
print(len(docs))
"""


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(scale: float, seed: int = 488) -> dict[str, dict[str, Any]]:
    """Every document of the world, by collection and id."""
    rng = random.Random(seed)
    n = {k: max(1, int(v * scale)) for k, v in SIZES.items()}
    agents = [f"a{i:03d}" for i in range(n["agents"])]
    out: dict[str, dict[str, Any]] = {c: {} for c in ("agents", "posts", "comments", "reactions", "follows")}
    for a in agents:
        out["agents"][a] = {"id": a, "name": f"Agent {a}", "persona": _text(rng, 30), "bio": _text(rng, 12),
                            "interests": sorted(set(rng.sample(WORDS, 3))), "karma": rng.randrange(500),
                            "post_count": 0,
                            "memory": [{"id": f"m{k}", "tick": k, "text": _text(rng, 10)} for k in range(rng.randrange(6))]}
    posts = [f"p{i:05d}" for i in range(n["posts"])]
    for p in posts:
        author = rng.choice(agents)
        out["agents"][author]["post_count"] += 1
        out["posts"][p] = {"id": p, "channel": rng.choice(("general", "ideas")), "author": author,
                           "title": _text(rng, 6), "body": _text(rng, rng.randrange(20, 120)),
                           "tick": rng.randrange(1, TICK), "score": rng.randrange(-5, 50), "comment_count": 0,
                           "tags": sorted(set(rng.sample(WORDS, rng.randrange(4))))}
    for i in range(n["comments"]):
        post = rng.choice(posts)
        out["posts"][post]["comment_count"] += 1
        c = f"c{i:06d}"
        out["comments"][c] = {"id": c, "post": post, "author": rng.choice(agents), "body": _text(rng, rng.randrange(5, 60)),
                              "tick": rng.randrange(1, TICK)}
    for i in range(n["reactions"]):
        r = f"r{i:06d}"
        out["reactions"][r] = {"id": r, "post": rng.choice(posts), "agent": rng.choice(agents), "kind": rng.choice(KINDS),
                               "tick": rng.randrange(1, TICK)}
    for i in range(n["follows"]):
        f = f"f{i:05d}"
        a, b = rng.sample(agents, 2)
        out["follows"][f] = {"id": f, "follower": a, "followee": b, "tick": rng.randrange(1, TICK)}
    return out


def build(root: Path, scale: float) -> tuple[Path, int]:
    """A fleet repository at tick 488 with the world on main and checked out; (path, files)."""
    repo = root / "fleet"
    init(repo)
    g = Git(repo)
    config = json.loads((repo / "state" / "config.json").read_text())
    for big in ("posts", "comments", "reactions"):
        config["collections"][big]["shard"] = 2  # 256 folders: none nears GitHub's 3,000 entries
    world = generate(scale)
    config["agents"] = {a: {"priority": 0} for a in world["agents"]}
    fleet_doc = json.loads((repo / "state" / "fleet.json").read_text())
    fleet_doc["tick"] = TICK
    writes: dict[str, bytes] = {"state/config.json": canonical.dumps(config), "state/fleet.json": canonical.dumps(fleet_doc)}
    deletes = [f"state/agents/{p.name}" for p in (repo / "state" / "agents").glob("*.json")]
    deletes += [str(p.relative_to(repo)) for c in ("posts", "comments", "reactions", "follows")
                for p in (repo / "state" / c).rglob("*.json")]
    from fleet.config import parse as parse_config

    cfg = parse_config(canonical.dumps(config))
    for coll, docs in world.items():
        for doc_id, doc in docs.items():
            writes[cfg.collections[coll].doc_path(doc_id)] = canonical.dumps(doc)
    head = g.rev_parse("HEAD")
    commit = g.write_commit(head, f"a world the size of Rappterbook's, at tick {TICK}\n", writes, deletes)
    g.run("update-ref", "refs/heads/main", commit)
    g.run("reset", "--quiet", "--hard", "main")
    # and the field index of that main beside it, as a merge publishes it with main (fleet.fieldindex)
    snap = GitSnapshot(g, commit)
    spec = load_world(snap.config, snap.read).prompt
    index = fieldindex.build(g, commit, snap.config, fieldindex.fields_of(spec, snap.config), None,
                             fieldindex.orders_of(spec, snap.config))
    g.run("update-ref", f"refs/heads/{fieldindex.BRANCH}", index)
    files = int(g.text("ls-tree", "-r", "--name-only", "main", "state").count("\n")) + 1
    return repo, files


def _timed(sw: Stopwatch, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    with sw:
        p = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if p.returncode not in (0,):
        raise SystemExit(f"bigworld: {' '.join(args[:4])} exited {p.returncode}: {p.stderr[-2000:]}")
    return p


def _received(gitdir: Path, skip: set[str]) -> int:
    """Objects a repository received: loose, or in packs not in ``skip``."""
    n = 0
    for idx in (gitdir / "objects" / "pack").glob("pack-*.idx"):
        if idx.stem not in skip:
            with idx.open("rb") as f:
                n += len(subprocess.run(["git", "show-index"], stdin=f, capture_output=True, check=True).stdout.splitlines())
    loose = subprocess.run(["git", "count-objects", "-v"], cwd=gitdir, capture_output=True, text=True, check=True)
    return n + int(dict(line.split(": ") for line in loose.stdout.splitlines())["count"])


# A child's peak memory counts the memory of the process that forked it (the page
# tables a fork copies, the address space a vfork shares) until it runs exec: a small
# process in between starts the measured one, so the bench's own memory is not in it.
# It also times the measured process, from its start to its end: the small process's
# own start is the bench's cost, not fleet's (the floor's git runs with none).
PEAK = r"""
import os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
t = time.perf_counter() - t
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {t}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _peak(sw: Stopwatch, args: list[str], cwd: Path) -> tuple[str, int, float]:
    """Run a process timed by ``sw``; (its output, its peak resident memory in KB:
    ``ru_maxrss`` from ``wait4``, the process and the children it waited for, and
    its wall time in seconds, without the process that measured it)."""
    with tempfile.TemporaryDirectory() as d:
        peak = Path(d) / "peak"
        with sw:
            p = subprocess.run([sys.executable, "-S", "-c", PEAK, str(peak), *args], cwd=cwd, capture_output=True,
                               text=True)
        if p.returncode:
            raise SystemExit(f"bigworld: {' '.join(args[:5])} exited {p.returncode}: {p.stderr[-2000:]}")
        rss, seconds = peak.read_text().split()
        return p.stdout, int(rss), float(seconds)


def _ticks(tmp: Path, repo: Path, daemon: Daemon, repeat: int) -> list[dict[str, Any]]:
    """bigworld-tick and the memory lines (see the module's docstring)."""
    for name in ("tick-ours.git", "tick-floor.git"):
        git(tmp, "clone", "--quiet", "--bare", str(repo), str(tmp / name))
    ours_url, floor_url = daemon.url("tick-ours.git"), daemon.url("tick-floor.git")
    runner = tmp / "tick-runner"
    git(tmp, "clone", "--quiet", "--depth", "1", "-b", "main", ours_url, str(runner))
    merger = private_repo(runner / ".git", "merge.git")
    clones = []
    for i in range(1, TICK_WORKERS + 1):
        clones.append(tmp / f"tick-floor-w{i}")
        git(tmp, "clone", "--quiet", "--depth", "1", "-b", "main", floor_url, str(clones[-1]))
    floor_merger = tmp / "tick-floor-merge"
    git(tmp, "clone", "--quiet", "-b", "main", floor_url, str(floor_merger))
    fleet = [sys.executable, "-m", "fleet"]
    ticks, merges, floors, floor_merges, naives = [], [], [], [], []
    worker_peak = merge_peak = 0
    for n in range(repeat + 1):  # the first tick warms the runner's caches and is not counted
        outbox = tmp / f"tick-outbox{n}"
        peaks, seconds = [], []
        for i in range(1, TICK_WORKERS + 1):
            _, rss, took = _peak(Stopwatch(), fleet + ["work", "--worker", str(i), "--workers", str(TICK_WORKERS),
                                                     "--remote", ours_url, "--provider", "offline",
                                                     "--outbox", str(outbox), "--json"], runner)
            peaks.append(rss)
            seconds.append(took)
        out, merged_peak, merge_took = _peak(Stopwatch(), fleet + ["merge", "-C", str(merger), "--remote", ours_url,
                                                                  "--inbox", str(outbox), "--json"], runner)
        whole = sum(seconds) + merge_took  # the processes' own times, one after another as they ran
        report = json.loads(out)
        deltas, state = merged_files(runner, report["commit"], report["tick"])
        f = tick_floor(clones, floor_merger, floor_url, report["tick"], tmp / f"tick-floor-outbox{n}", deltas, state)
        # the naive worker beside it: the floor's, which then brings its checkout to main and
        # reads and parses every document (what a worker with no field index does)
        naive = Stopwatch()
        for clone in clones:
            with naive:
                git(clone, "reset", "-q", "--hard", "refs/remotes/origin/main")
                subprocess.run([sys.executable, "-c", READ_FLOOR, str(clone)], check=True, capture_output=True)
        log(f"tick {report['tick']}: ours {whole:.1f}s (merge {merge_took:.1f}s, {report['applied']} "
            f"deltas, peaks: workers {max(peaks) // 1024} MB, merge {merged_peak // 1024} MB); floor {f['tick']:.1f}s "
            f"(merge {f['merge']:.1f}s)" + ("" if n else " (warm-up)"))
        if n:
            ticks.append(whole)
            merges.append(merge_took)
            floors.append(f["tick"])
            naives.append(f["tick"] + sum(naive.times))
            floor_merges.append(f["merge"])
            worker_peak, merge_peak = max(worker_peak, *peaks), max(merge_peak, merged_peak)
    _, read_peak, _ = _peak(Stopwatch(), [sys.executable, "-c", READ_FLOOR, str(runner)], runner)
    size = {"agents": len(json.loads((repo / "state" / "config.json").read_bytes())["agents"]), "workers": TICK_WORKERS,
            "deltas": report["applied"], "mode": "coalesced", "transport": "git daemon on 127.0.0.1"}
    return [
        result("bigworld-tick", median(ticks), median(naives), "s", goal=1.5, merge=round(median(merges), 3),
               floor_merge=round(median(floor_merges), 3), git_floor=round(median(floors), 3),
               vs_git=round(median(ticks) / median(floors), 2),
               floor_is="each worker fetches, checks out main and reads and parses every document; "
                        "the merge's floor as scale's", **size),
        result("bigworld-memory-worker", worker_peak / 1024, read_peak / 1024, "MB", goal=1.5,
               detail="peak RSS of the largest fleet work against one process holding every document parsed"),
        result("bigworld-memory-merge", merge_peak / 1024, read_peak / 1024, "MB", goal=1.5,
               detail="peak RSS of fleet merge against one process holding every document parsed"),
    ]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import compileall

    import fleet

    compileall.compile_dir(str(Path(fleet.__file__).parent), quiet=1)
    scale = 0.1 if args.small else 1.0
    repeat = args.repeat
    out: list[dict[str, Any]] = []
    with workdir(args.tmp, "fleet-bigworld-", args.keep) as tmp:
        log(f"building the world (scale {scale}) in {tmp}")
        repo, files = build(tmp, scale)
        log(f"{files} state files at tick {TICK}")
        # -- validate -------------------------------------------------------------
        ours, floor = Stopwatch(), Stopwatch()
        for _ in range(repeat):
            p = _timed(ours, [sys.executable, "-m", "fleet", "validate", "--json"], repo)
            checked = json.loads(p.stdout)["checked"]
            f = _timed(floor, [sys.executable, "-c", FLOOR, str(repo)], repo)
            assert json.loads(f.stdout)["bad"] == 0
        out.append(result("bigworld-validate", median(ours.times), median(floor.times), "s", files=checked,
                          goal=1.5, cpu_ratio=round(median(ours.cpu) / median(floor.cpu), 3)))
        log(f"validate: {out[-1]}")
        # -- a fresh worker ------------------------------------------------------------
        bare = tmp / "origin.git"
        git(tmp, "clone", "--quiet", "--bare", str(repo), str(bare))
        daemon = Daemon(tmp)
        try:
            url = daemon.url("origin.git")
            ours, floor = Stopwatch(), Stopwatch()
            got_ours = got_floor = 0
            for i in range(repeat):
                clone = tmp / f"floor{i}"
                _timed(floor, ["git", "clone", "--quiet", "--depth", "1", "-b", "main", url, str(clone)], tmp)
                got_floor = _received(clone / ".git", set())
                runner = tmp / f"runner{i}"
                git(tmp, "clone", "--quiet", "--depth", "1", "-b", "main", url, str(runner))
                linked = {p.stem for p in (runner / ".git" / "objects" / "pack").glob("pack-*.idx")}
                worked = _timed(ours, [sys.executable, "-m", "fleet", "work", "--worker", "1", "--workers", "1",
                                       "--remote", url, "--agents", "a000", "--json", "--provider", "offline",
                                       "--outbox", str(tmp / f"outbox{i}")], runner)  # as on Actions: the matrix hands files over
                index = json.loads(worked.stdout)["index"]
                got_ours = _received(runner / ".git" / "fleet" / "workers" / "w1.git", linked)
            out.append(result("bigworld-worker", median(ours.times) + median(floor.times), median(floor.times), "s",
                              files=files, goal=1.5, objects_ours=got_ours + got_floor, objects_floor=got_floor,
                              index=index,
                              cpu_ratio=round((median(ours.cpu) + median(floor.cpu)) / median(floor.cpu), 3),
                              detail="ours: the runner's checkout and its fleet work; floor: the checkout alone"))
            log(f"worker: {out[-1]}")
            out += _ticks(tmp, repo, daemon, repeat)
            for r in out[-3:]:
                log(f"{r['bench']}: {r}")
        finally:
            daemon.stop()
        out.append(replay_line(tmp, repo, repeat))
        log(f"replay: {out[-1]}")
    return out


def add_arguments(p: argparse._ArgumentGroup) -> None:
    pass


# -- replay --------------------------------------------------------------------
REPLAY_TICKS = 3
REPLAY_AGENTS = 6


def _seeded(tmp: Path, repo: Path) -> Path:
    """A clone of the world whose history replay can check: genesis, the world
    seeded by a person's commit (the clock left to the merge engine), and
    ``REPLAY_TICKS`` ticks merged by ``fleet merge``, each agent of a few
    changing its own document."""
    from growth import tick_of_own_changes

    src = tmp / "replayed"
    git(tmp, "clone", "--quiet", str(repo), str(src))
    git(src, "remote", "remove", "origin")  # its own fleet: main is here
    g = Git(src)
    genesis = g.text("rev-list", "--max-parents=0", "HEAD")
    clock = g.run("show", f"{genesis}:state/fleet.json")
    fixed = g.write_commit(g.rev_parse("HEAD"), "scratch", {"state/fleet.json": clock}, [])
    seeded = git(src, "commit-tree", g.commit_tree(fixed), "-p", genesis, "-m",
                 "seed a world the size of Rappterbook's").decode().strip()
    g.run("update-ref", "refs/heads/main", seeded)
    g.run("checkout", "--quiet", "--detach", "main")  # main moves by the merge alone
    agents = sorted(json.loads(g.run("show", "main:state/config.json"))["agents"])[:REPLAY_AGENTS]
    for tick in range(1, REPLAY_TICKS + 1):
        tick_of_own_changes(g, src, tick, agents)
    g.run("checkout", "--quiet", "--force", "--detach", "main")  # the floor reads the files of main as checked out
    return src


def replay_line(tmp: Path, repo: Path, repeat: int) -> dict[str, Any]:
    """``bigworld-replay``: ``fleet replay --check`` of the world's history against
    a plain read, parse and schema check of every document (the validate floor)."""
    src = _seeded(tmp, repo)
    files = int(git(src, "ls-tree", "-r", "--name-only", "main", "state").count(b"\n"))
    ours, floor = Stopwatch(), Stopwatch()
    for _ in range(repeat):
        p = _timed(ours, [sys.executable, "-m", "fleet", "replay", "--check", "--json"], src)
        report = json.loads(p.stdout)
        assert report["ok"] and report["ticks"] == REPLAY_TICKS, report.get("first_difference")
        f = _timed(floor, [sys.executable, "-c", FLOOR, str(src)], src)
        assert json.loads(f.stdout)["bad"] == 0
    return result("bigworld-replay", median(ours.times), median(floor.times), "s", files=files, goal=1.5,
                  ticks=REPLAY_TICKS, commits=report["commits"],
                  cpu_ratio=round(median(ours.cpu) / median(floor.cpu), 3),
                  detail="ours: fleet replay --check of genesis, the world seeded by a person's commit and "
                         f"{REPLAY_TICKS} ticks; floor: read, parse and schema-check every document once")
