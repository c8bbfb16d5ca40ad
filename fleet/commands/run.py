"""`fleet run`: the whole loop on one machine, tick after tick.

Each tick: W worker processes (``fleet work``) in parallel, then the merge.
With no ``--remote``, the fleet lives in a local bare origin under
``.git/fleet/origin.git`` (outside your tracked files), seeded from your main
the first time; ``git config fleet.remote`` then points the other commands at
it. Your working tree and branches are not modified. Ctrl-C stops the workers
(each cleans up after itself), leaves no process, worktree, local worker
branch or lock behind, and the next run resumes at the next unmerged tick.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from fleet import canonical, tick_tasks
from fleet import world as world_mod
from fleet.cli import dir_option, emit, flag_seconds, json_option
from fleet.clock import Clock
from fleet.commands.merge import merge
from fleet.config import Limits
from fleet.delta import DELTA_DIR
from fleet.errors import FleetError, NothingToDo, UsageError
from fleet.git import Git, RefUpdate, common_dir, git_reason, toplevel
from fleet.ids import printable
from fleet.installed import command as fleet_command
from fleet.keys import redact
from fleet.outside import bring_in_local_main, check_state, main_refusal, special_entry, unpushed_local_main
from fleet.plan import assign, roster
from fleet.providers import ProviderUnavailable, choose, models
from fleet.records import Usage
from fleet.repo import EMBEDDED, TRACKING, WORKER_BRANCH, FleetRepo, Source, embedded_origin
from fleet.spend import spending
from fleet.state import GitSnapshot
from fleet.tasks import BRANCH as TASKS_BRANCH
from fleet.workspace import FLEET_DIR, OUTBOX, clear_stale_locks, make_dirs, private_repo, remote_url, remove_made


class NotStarted(Exception):
    """The next tick may not start: a day or month budget is spent, or another run
    started it (the message says which, and when that ends)."""


# How long a worker stopped at the deadline has to publish what it finished (a
# commit and a push) before it is killed: a push over a slow network, or on a
# busy machine, can take more than a few seconds.
STOP_GRACE = 30.0


@dataclass
class TickLine:
    tick: int
    workers: int
    delivered: int
    applied: int
    quarantined: int
    held: int
    seconds: float
    mode: str
    noop: int = 0  # each delta counts once: applied, noop, held or quarantined (issue 14)
    held_deltas: int = 0  # ``held`` is the conflicts opened or joined
    resolved: list[str] = field(default_factory=list)  # conflicts a person's decision settled this tick
    tokens: int = 0
    cost_usd: float = 0.0
    asked: int = 0  # the workers asked for; ``workers`` ran (a worker with no agent is not started)
    failed: int = 0  # of the no-ops: turns that failed (meta.error: the model call or the turn raised)
    first_error: str | None = None
    merged_by: str | None = None  # set when another run merged this tick first: why this run merged nothing
    waiting: int = 0  # turns an earlier, interrupted run had delivered: merged now, not run again


def waiting_turns(repo: FleetRepo, sources: list[Source], outbox: Path, tick: int, limits: Limits) -> dict[str, str]:
    """Agent -> where its turn of ``tick`` waits for the merge: a delta of that tick
    on a worker branch of it on the remote (``sources``, as fetched; in the branch's
    own worker's folder) or in this clone's outbox, from any worker. Only a file the
    merge would read as a delta counts (fleet.delta.parse, named for its id): one
    that is not (cut short, not fleet's, in another worker's folder) is no turn done,
    the merge quarantines it, and its agent runs."""
    from fleet.delta import Arrival, turn_of

    found: dict[str, str] = {}

    def note(arrival: Arrival, worker: str, where: str) -> None:
        agent = turn_of(arrival, limits, tick, worker)
        if agent is not None:
            found.setdefault(agent, where)

    for a in repo.arrivals(sources, limits.max_delta_bytes) if sources else ():
        branch = a.source.removeprefix("refs/heads/")
        m = WORKER_BRANCH.match(branch)
        if m is not None:
            note(a, m.group(2), branch)
    try:
        files = sorted((outbox / DELTA_DIR).glob(f"*/*/t{tick}-*.json"))
    except OSError:
        files = []
    for f in files:
        try:
            if f.is_symlink() or not f.is_file() or f.stat().st_size > limits.max_delta_bytes:
                continue
            note(Arrival(str(outbox), f.relative_to(outbox).as_posix(), f.read_bytes()), f.parent.parent.name,
                 "the outbox")
        except OSError:
            continue
    return found


def _has_files(folder: Path) -> bool:
    try:
        return any(p.is_file() for p in folder.rglob("*.json"))
    except OSError:
        return False


@dataclass
class RunReport:
    remote: str
    created_origin: bool
    remembered: str | None = None  # --remote became git config fleet.remote: what to say of it (remember_remote)
    ticks: list[TickLine] = field(default_factory=list)
    provider: str = "offline"
    models: list[str] = field(default_factory=list)
    note: str | None = None
    local_main: str | None = None  # what became of commits on your own main
    uncommitted: int = 0  # files under state/ or schemas/ changed in your working tree and not committed
    seconds: float = 0.0
    interrupted: bool = False
    published_unseen: int | None = None  # interrupted after its merge published this tick (not in `ticks`)
    stopped: str | None = None  # why no further tick started (a budget is spent, another run started it)

    def to_json(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "provider": self.provider,
            "models": self.models,
            "created_origin": self.created_origin,
            "remembered_remote": self.remembered,
            "tick": self.ticks[-1].tick if self.ticks else None,
            "ticks": [t.__dict__ for t in self.ticks],
            "applied": sum(t.applied for t in self.ticks),
            "noop": sum(t.noop for t in self.ticks),
            "failed": sum(t.failed for t in self.ticks),
            "held_deltas": sum(t.held_deltas for t in self.ticks),
            "merged": sum(t.applied + t.noop + t.held_deltas for t in self.ticks),  # every delta in the ledger
            "quarantined": sum(t.quarantined for t in self.ticks),
            "held": sum(t.held for t in self.ticks),
            "resolved": [c for t in self.ticks for c in t.resolved],
            "tokens": sum(t.tokens for t in self.ticks),
            "cost_usd": sum(round(t.cost_usd * 1_000_000) for t in self.ticks) / 1_000_000,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "published_before_interrupt": self.published_unseen,
            "stopped": self.stopped,
            "local_main": self.local_main,
            "uncommitted": self.uncommitted,
        }


def ensure_origin(root: Path, remote: str | None) -> tuple[str, bool]:
    """The URL the fleet lives at; creates the embedded bare origin if needed."""
    git = Git(root)
    if remote is not None:
        return remote_url(git, remote), False
    configured = git.proc("config", "--get", "fleet.remote").stdout.decode().strip()
    origin = embedded_origin(root)
    if configured and configured not in (EMBEDDED, origin.as_uri()):
        return remote_url(git, configured), False
    created = False
    if not (origin / "HEAD").exists() and configured == EMBEDDED and _restore_origin(git, origin):
        pass
    elif not (origin / "HEAD").exists():
        if git.rev_parse("refs/heads/main") is None:
            raise FleetError(f"{root}: has no main branch to seed the fleet from")
        for needed in ("state/config.json", "state/fleet.json"):
            if git.special_entries("refs/heads/main", needed):
                raise FleetError(f"{needed}: {special_entry(git.special_entries('refs/heads/main', needed)[needed])}; "
                                 "your main does not become the fleet's: fix that and commit again")
            if git.show("refs/heads/main", needed) is None:
                raise FleetError(f"{root}: main has no {needed}; is this a fleet repository? "
                                 "(`fleet init DIR` makes one; commit state/ and schemas/ to main)")
        # Your main becomes the fleet's genesis: it is checked as a person's commit is.
        check_state(GitSnapshot(git, git.text("rev-parse", "refs/heads/main")), "your main does not become the fleet's")
        origin.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(origin, ignore_errors=True)  # what an interrupted first run left
        partial = origin.with_name(origin.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        git.run("clone", "--quiet", "--bare", "--single-branch", "--branch", "main", str(root), str(partial))
        queue = git.rev_parse(f"refs/heads/{TASKS_BRANCH}")
        if queue:  # the task queue moves to the origin with main, so it is not left behind
            Git(partial).run("fetch", "--quiet", str(root), f"refs/heads/{TASKS_BRANCH}:refs/heads/{TASKS_BRANCH}")
        partial.rename(origin)  # all or nothing: no half-made origin is ever used
        if queue:
            git.proc("update-ref", "-d", f"refs/heads/{TASKS_BRANCH}", queue)
        created = True
    if configured != EMBEDDED:  # not the absolute path: a copied or moved repository finds its own origin
        git.run("config", "fleet.remote", EMBEDDED)
    return origin.as_uri(), created


def remember_remote(root: Path, remote: str | None, url: str, created: bool = False) -> str | None:
    """The first ``--remote`` given to a run of a clone with no ``fleet.remote`` becomes
    its ``fleet.remote``, so that `fleet status`, `fleet task` and the others, run
    there next, see the fleet this run ticked, not the clone's own branches (nor
    ``origin``). A remote name is kept as a name, anything else as the URL it means.
    What to say of it, or None when nothing was set. A first run that made an origin of
    its own in a clone that has an ``origin`` remote (``created``) says how to tick that
    one instead: `fleet status` there read origin until this run."""
    git = Git(root)
    if remote is None:
        there = git.proc("config", "--get", "remote.origin.url")
        if created and there.returncode == 0:
            return (f"this clone has a remote origin ({printable(there.stdout.decode(errors='replace').strip(), 200)}): "
                    "this run ticks a fleet of its own, in .git/fleet/origin.git, and later commands here follow "
                    "it; `fleet run --remote origin` in a clone that has not run ticks origin's main instead")
        return None
    if git.proc("config", "--get", "fleet.remote").stdout.strip():
        return None  # a person's (or an earlier run's) choice: an explicit --remote does not change it
    keep = remote if git.proc("config", "--get", f"remote.{remote}.url").returncode == 0 else url
    if git.proc("config", "fleet.remote", keep).returncode:
        return None  # a read-only git config: this run goes on, later commands need --remote
    return (f"later fleet commands here use {printable(keep, 300)} too (git config fleet.remote; "
            "`git config --unset fleet.remote` forgets it)")


def _restore_origin(git: Git, origin: Path) -> bool:
    """Rebuild a deleted embedded origin from this clone's last view of it.

    ``.git/fleet/origin.git`` is the fleet's origin, not a cache: the merged
    history lives there. If it is gone but ``refs/fleet/origin/main`` (set
    whenever a run ends) is here, the origin is rebuilt from every tracked ref,
    so the fleet goes on from its last tick instead of starting over at tick 1
    from your main. False when there is nothing tracked (a first run).
    """
    tracked = [line.split(" ", 1) for line in git.text(
        "for-each-ref", "--format=%(objectname) %(refname)", TRACKING).splitlines() if line]
    if not any(ref == TRACKING + "main" for _, ref in tracked):
        return False
    # The view may have come from another remote (`fleet status --remote X` fetches into the
    # same refs): rebuild only a fleet that shares history with your main, never X's.
    local = git.rev_parse("refs/heads/main")
    if git.show(TRACKING + "main", "state/fleet.json") is None or (
            local is not None and git.proc("merge-base", local, TRACKING + "main").returncode != 0):
        raise FleetError(f"{origin} is missing, and {TRACKING}main is no view of this fleet's origin (it holds "
                         "no state/fleet.json or shares no history with your main; a command run with --remote "
                         "fetches there too): fleet run will not rebuild the origin from it. Restore the folder, "
                         "or delete refs/fleet/origin/ to start the fleet over from your main")
    origin.parent.mkdir(parents=True, exist_ok=True)
    partial = origin.with_name(origin.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(origin, ignore_errors=True)  # what an interrupted run left (no HEAD: never usable)
    git.run("init", "--quiet", "--bare", "--initial-branch", "main", str(partial))
    pushed = git.push(str(partial), [RefUpdate(f"refs/heads/{ref[len(TRACKING):]}", sha, None) for sha, ref in tracked],
                      atomic=True)
    if pushed.outcome != "won":
        raise FleetError(f"{origin} was missing and could not be rebuilt from refs/fleet/origin/: {pushed.reason}")
    partial.rename(origin)  # all or nothing, as on a first run
    clock = git.show(TRACKING + "main", "state/fleet.json")  # one file, not a listing of the whole world
    body = canonical.load(clock, "state/fleet.json") if clock else None
    tick = body.get("tick") if isinstance(body, dict) else None
    at = f"main at tick {tick}" if isinstance(tick, int) else "main's tick not readable"
    names = ", ".join(ref[len(TRACKING):] for _, ref in tracked)
    sys.stderr.write(f"fleet: {origin} was missing; rebuilt it from this clone's last view of it "
                     f"({names}; {at}). What it held beyond that view is lost.\n")
    return True


def run(
    path: Path,
    *,
    ticks: int = 1,
    workers: int | None = None,
    remote: str | None = None,
    provider: str | None = None,
    push: str | None = None,
    deadline: float | None = None,
    on_start: Callable[[RunReport], None] = lambda r: None,
    on_tick: Callable[[TickLine], None] = lambda t: None,
) -> RunReport:
    if ticks < 1:
        raise UsageError("--ticks must be at least 1")
    started = time.monotonic()
    root = toplevel(path)
    with _one_run(root), _term_is_interrupt():
        return _run(root, started, ticks, workers, remote, provider, push, deadline, on_start, on_tick)


@contextmanager
def _term_is_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager, `kill`) stops a run as Ctrl-C does, so its
    workers are stopped too instead of being orphaned mid-tick."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _one_run(root: Path) -> Iterator[None]:
    """One `fleet run` at a time in a repository: a second would race the
    first for the same workers' caches and report ticks it did not run.

    The lock is an flock on .git/fleet/run.pid, held for the whole run and
    released by the kernel however the run ends (kill -9 included); the pid in
    the file is only for the message."""
    lock = common_dir(root) / FLEET_DIR / "run.pid"
    made: list[Path] = []
    make_dirs(lock.parent, made)
    fd, held = -1, False
    try:
        for _ in range(100):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                who = f"pid {printable(holder, 20)}" if holder.isdigit() else "its pid not yet written"
                raise FleetError(f"another `fleet run` ({who}) is running in {root}; wait for it, "
                                 "or stop it with Ctrl-C") from None
            if _same_file(fd, lock):
                held = True
                break
            os.close(fd)  # the file of a run that ended and removed it as we opened it: open the new one
            fd = -1
        else:
            raise FleetError(f"{lock}: removed each time this run opened it; run it again")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if held:
            # removed while still held, so no run can hold a file that is no longer the lock
            # (each checks, once it holds one, that it is the file at the lock's name)
            with suppress(OSError):
                lock.unlink()
        if fd >= 0:
            os.close(fd)  # releases the lock
        remove_made(made)  # .git/fleet, if this run made it and nothing else is in it


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _run(root: Path, started: float, ticks: int, workers: int | None, remote: str | None, provider: str | None,
         push: str | None, deadline: float | None, on_start: Callable[[RunReport], None],
         on_tick: Callable[[TickLine], None]) -> RunReport:
    url, created = ensure_origin(root, remote)
    report = RunReport(url, created, remembered=remember_remote(root, remote, url, created))
    merge_cache = private_repo(common_dir(root), "merge.git")
    clear_stale_locks(merge_cache)  # one `fleet run` at a time (_one_run): a lock there is a killed run's
    repo = FleetRepo(merge_cache, url)
    repo.fetch()
    if remote is None and url == embedded_origin(root).as_uri():
        report.local_main = bring_in_local_main(root, url, repo.main())
        if report.local_main:
            repo.fetch()
    else:  # a remote of your own: your commits are the fleet's once you push them
        report.local_main = unpushed_local_main(root, url, repo.main())
    _refuse_main(repo)
    if remote is None:  # your own checkout: an edit not committed is not the fleet's, and is not used
        status = Git(root).proc("status", "--porcelain", "-z", "--untracked-files=all", "--", "state", "schemas")
        report.uncommitted = status.stdout.count(b"\0") if status.returncode == 0 else 0
    snap = repo.snapshot()
    cfg = snap.config
    world_mod.warm(snap)
    world_mod.load(cfg, snap.read)  # a world that cannot run is refused before any tick starts
    provider, note = choose(provider, cfg)
    report.provider, report.note, report.models = provider, note, models(provider, cfg)
    on_start(report)
    try:
        for _ in range(ticks):
            line = _tick(root, merge_cache, url, workers, provider, push, deadline)
            report.ticks.append(line)
            on_tick(line)
    except NotStarted as e:
        report.stopped = str(e)  # the ticks that ran are merged: nothing finished is lost
    except KeyboardInterrupt:
        report.interrupted = True
        report.published_unseen = _published_since(repo, report.ticks[-1].tick if report.ticks else snap.tick)
    finally:
        if remote is None:  # the remote this repository's own commands read, embedded or configured
            _track_main(root, url)
    report.seconds = time.monotonic() - started
    return report


def _me(root: Path) -> str:
    """Who starts a tick in the start record: this machine and clone, the same for every
    `fleet run` there (a run interrupted and run again takes its own start over)."""
    import hashlib
    import socket

    where = hashlib.sha256(str(common_dir(root).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"fleet run on {printable(socket.gethostname(), 80)}, clone {where}"


def _published_since(repo: FleetRepo, tick: int) -> int | None:
    """The tick main is at now if a merge this run interrupted published it (the
    interrupt came after its push), else None: the run says so, not "no tick merged"."""
    try:
        repo.fetch()
        now = repo.snapshot().tick
    except (FleetError, KeyboardInterrupt):
        return None
    return now if now > tick else None


def _track_main(root: Path, url: str) -> None:
    """Point refs/fleet/origin/main, which the README tells you to inspect, at the
    fleet's main as this run left it published. The run's merges work in a
    private cache, so without this the ref would be missing after a first run
    and one run behind after the others. Best effort: the origin stays the truth."""
    err = Git(root).fetch_refs(url, f"+refs/heads/main:{TRACKING}main")
    if err is not None:
        print(redact(f"fleet: could not update {TRACKING}main from {url}: {git_reason(err, 'fetch failed')}"),
              file=sys.stderr)


def _tick(root: Path, merge_cache: Path, url: str, workers: int | None, provider: str | None,
          push: str | None, deadline: float | None) -> TickLine:
    t0 = time.monotonic()
    repo = FleetRepo(merge_cache, url)
    repo.fetch()
    _refuse_main(repo)  # before any worker starts: the merge would refuse it anyway
    snap = repo.snapshot()
    cfg = snap.config
    count = workers or cfg.run.workers
    mode = push or cfg.run.push_mode(count)
    tick = snap.tick + 1
    spent = spending(repo, snap.commit, cfg, datetime.now(UTC)).stop()
    if spent is not None:  # before any worker starts: a budget stops new ticks, never work under way
        raise NotStarted(f"tick {tick} did not start: {spent.why()}")
    # The start, recorded on fleet/clock by compare-and-swap as a workflow's plan job records
    # it: of two runs on one origin (two clones, a workflow), one starts the tick and the
    # other starts nothing, instead of running every turn for a merge that keeps none of them.
    won, held = Clock(repo).start(tick, time.time(), cfg, _me(root), "by hand")
    if not won:
        if held is not None and held.tick == tick:
            raise NotStarted(f"tick {tick} did not start: it is under way, {held.by} started it ({held.how}) and "
                             f"its own merge publishes it; another run may start it after "
                             f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(held.lease_until))}")
        raise NotStarted(f"tick {tick} did not start: main moved on meanwhile (another run merged it)")
    # Coalesced workers hand their deltas to an outbox that outlives this run: interrupted
    # before its merge, the next run's workers do only the turns still missing there and
    # its merge takes them all (as direct mode's worker branches wait for the next merge).
    kept = common_dir(root) / FLEET_DIR / OUTBOX
    # Turns of this tick an earlier, interrupted run delivered (its worker branches, this
    # outbox) are not run again, whatever worker count or mode that run had: each worker
    # knows only its own branch or folder, and agents move between workers with the count.
    sources = [s for s in repo.sources() if (m := WORKER_BRANCH.match(s.branch)) and int(m.group(1)) == tick]
    waiting = waiting_turns(repo, sources, kept, tick, cfg.limits)
    agents = [a for a in roster(cfg.agents) if a not in waiting]
    if waiting or sources:
        # a worker branch of this tick exists (an earlier run's, or one nobody of ours
        # pushed): a worker could not push its own, so the turns go through the outbox
        mode = "coalesced"
    planned = [n for n, mine in assign(agents, count).items() if mine] if agents else []
    if tick_tasks.task_agents(cfg):  # the step that runs no model hands tasks out first
        tick_tasks.hand_out_now(FleetRepo(merge_cache, url))
    outbox = kept if mode == "coalesced" else None
    procs: list[subprocess.Popen[bytes]] = []
    logs = tempfile.TemporaryFile()
    try:
        for name in planned:
            # the installed fleet, as the merge below runs it: never a ./fleet in the working folder
            args = fleet_command("work", "-C", str(root), "--worker", name[1:],
                                 "--workers", str(count), "--tick", str(tick), "--remote", url)
            if provider:
                args += ["--provider", provider]
            if outbox is not None:
                args += ["--outbox", str(outbox)]
            if waiting:
                args += ["--agents", ",".join(agents)]
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=logs))
        wait = deadline if deadline is not None else cfg.run.deadline_seconds
        limit = time.monotonic() + wait
        delivered = _wait(procs, limit, logs)
        if not delivered and not waiting:
            # Ticks never advance on nothing: merging now would commit an empty tick, the
            # watchdog would call every worker dead, and the next tick would fail the same way.
            why = _first_error(logs)
            if why == NO_REASON and time.monotonic() >= limit:
                why = (f"the deadline of {wait:g}s passed before any worker finished; "
                       f"{'--deadline' if deadline is not None else 'run.deadline_seconds'} gives them longer")
            released = _release(repo, tick, root, why)
            raise FleetError(f"tick {tick}: none of {len(planned)} worker(s) delivered ({why}); "
                             f"nothing was merged and main stays at tick {tick - 1}{released}")
        try:
            # the outbox whatever this tick's mode: what an earlier run left there is merged now, not late
            inbox = (kept,) if kept.is_dir() and (outbox is not None or _has_files(kept)) else ()
            result = merge(merge_cache, remote=url, inbox=inbox, allow_empty=True, tick=tick)
        except NothingToDo as e:  # another run on this origin merged the tick first (its deltas with it)
            return TickLine(tick, len(planned), delivered, 0, 0, 0, round(time.monotonic() - t0, 3), mode, asked=count,
                            merged_by=f"another run merged tick {tick} first ({e}); what this run's workers "
                                      "delivered after it is merged, late, with the next tick, but a worker that "
                                      "found its branch of this tick pushed by the other run's kept nothing")
        spent = Usage.parse(result.usage)
        failed, first = _failed_turns(repo, result.commit, tick) if result.noop else (0, None)
        return TickLine(tick, len(planned), delivered, result.applied, len(result.quarantined), len(result.held),
                        round(time.monotonic() - t0, 3), mode, result.noop, result.held_deltas, result.resolved,
                        spent.tokens, spent.cost_usd, count, failed, first, waiting=len(waiting))
    finally:
        _stop(procs)
        logs.close()  # (the merge takes from the outbox what it decided; what is left waits for the next)


def _release(repo: FleetRepo, tick: int, root: Path, why: str) -> str:
    """Free this run's start of ``tick`` (it failed with nothing delivered); what to add
    to the run's error about it."""
    try:
        if Clock(repo).release(tick, time.time(), _me(root), f"none of its workers delivered: {why}"):
            return "; its start is released on fleet/clock, so any run may start it again"
    except FleetError as e:
        return f"; its start could not be released ({e}), so other clones wait for its lease to end"
    return ""


def _refuse_main(repo: FleetRepo) -> None:
    """Stop, in one line, on a change fleet refuses that a person pushed to the
    fleet's main (fleet.outside.main_refusal): no tick is built on it."""
    refused = main_refusal(repo.git, repo.main())
    if refused is not None:
        raise FleetError(refused.line("no tick starts on it and nothing was merged"))


def _failed_turns(repo: FleetRepo, commit: str, tick: int) -> tuple[int, str | None]:
    """The turns of ``tick`` that failed, from its ledger on ``commit``."""
    from fleet.overview import failed_turns
    from fleet.state import LEDGER_DIR

    snap = GitSnapshot(repo.git, commit)
    paths = [p for p in snap.under(f"{LEDGER_DIR}/{tick}") if not p.rsplit("/", 1)[-1].startswith("_")]
    records = []
    for path, data in snap.read_many(paths).items():
        for line in (data or b"").splitlines():
            try:
                records.append(canonical.load(line, path))
            except FleetError:
                continue  # the merge wrote it; a line it could not have written is not a turn
    return failed_turns(records)


def _wait(procs: list[subprocess.Popen[bytes]], limit: float, logs: Any) -> int:
    """Wait for the workers until the deadline; a worker still running then is
    stopped (SIGTERM: it publishes what it finished) and its agents skip the tick."""
    for p in procs:
        remaining = limit - time.monotonic()
        try:
            p.wait(timeout=max(0.0, remaining))
        except subprocess.TimeoutExpired:
            pass
    _signal_and_reap(procs, signal.SIGTERM)
    if any(p.returncode not in (0, 3) for p in procs):
        logs.seek(0)
        for line in logs.read().decode(errors="replace").splitlines()[-5:]:
            print(redact(line), file=sys.stderr)
    return sum(1 for p in procs if p.returncode in (0, 3))


def _first_error(logs: Any) -> str:
    """The first error a worker printed (``fleet: ...``), for the run's own message."""
    logs.seek(0)
    for line in logs.read().decode(errors="replace").splitlines():
        if line.startswith("fleet: "):
            return redact(line.removeprefix("fleet: ").strip())
    return NO_REASON


NO_REASON = "no worker said why"


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """No worker outlives the run: interrupt, then kill."""
    _signal_and_reap(procs, signal.SIGINT)


def _signal_and_reap(procs: list[subprocess.Popen[bytes]], sig: int) -> None:
    """Send ``sig`` to the workers still running; kill those that outlast the grace."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.send_signal(sig)
    for p in alive:
        try:
            p.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- the command line --------------------------------------------------------
@click.command("run")
@dir_option
@json_option
@click.option("--ticks", type=int, default=1, show_default=True, help="How many ticks to run.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes per tick, 1 to 256 (default: run.workers).")
@click.option("--remote", default=None, metavar="URL",
              help="The fleet's remote; default: a local bare origin in .git/fleet/origin.git.")
@click.option("--provider", default=None, help="auto, offline or anthropic (default: run.provider in config; auto is anthropic when ANTHROPIC_API_KEY is set).")
@click.option("--push", type=click.Choice(["direct", "coalesced"]), default=None,
              help="Force a push mode (default: by fleet size, run.push in config).")
@click.option("--deadline", type=float, default=None, help="Seconds a tick waits for its workers.")
def run_command(directory: Path, as_json: bool, ticks: int, workers: int | None, remote: str | None,
                provider: str | None, push: str | None, deadline: float | None) -> None:
    """The whole loop on one machine: W workers in parallel, then the merge, tick after tick."""
    if deadline is not None:
        deadline = flag_seconds("--deadline", deadline)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from fleet.progress import wanted

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            """The reader left (`fleet run | head`): the ticks go on, merged as ever, unseen
            (rich would end the run mid-way, exit 1, with nothing said)."""
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, (sys.stderr if self.stderr else sys.stdout).fileno())

    console = _Console(stderr=as_json, highlight=False, soft_wrap=True)
    progress = Progress(TextColumn("[bold]fleet run"), BarColumn(), TextColumn("{task.completed}/{task.total} ticks"),
                        TimeElapsedColumn(), console=console, transient=True, disable=not wanted(as_json))

    def started(r: RunReport) -> None:
        if r.created_origin:
            console.print(f"created a local bare origin for this fleet: {r.remote}")
        else:
            console.print(f"fleet remote: {r.remote}")
        console.print(f"provider {r.provider}, model {', '.join(r.models)}", markup=False)
        if r.remembered:
            console.print(f"note: {r.remembered}", markup=False)
        if r.note:
            console.print(f"note: {r.note}", markup=False)
        if r.local_main:
            console.print(r.local_main)
        if r.uncommitted:
            console.print(f"note: {r.uncommitted} file(s) under state/ or schemas/ are changed but not committed, and "
                          "are not used: the fleet runs what is committed (`git status` lists them; commit them "
                          "on top of refs/fleet/origin/main to make them the fleet's)", markup=False)
        progress.start()  # only now: an error before the first tick prints one line, nothing else

    def ticked(t: TickLine) -> None:
        progress.advance(task)
        if t.merged_by:
            progress.console.print(f"tick {t.tick}: {t.delivered}/{t.workers} workers delivered ({t.mode}); "
                                   f"nothing merged by this run: {t.merged_by}", markup=False)
            return
        progress.console.print(
            f"tick {t.tick}: {t.delivered}/{t.workers} workers delivered ({t.mode}), {t.applied} applied, "
            f"{t.quarantined} quarantined, {t.noop} no-op"
            + (f" ({t.failed} failed: {t.first_error})" if t.failed else "")
            + f", {t.held_deltas} held in {t.seconds:.1f}s"
            + "".join(f"; decided {c} (a person's resolution applied)" for c in t.resolved)
            + (f"; {t.waiting} turn(s) an interrupted run had delivered were merged, not run again" if t.waiting
               else ""), markup=False)
        if t.asked > t.workers and not spread_told:
            spread_told.append(t.tick)
            progress.console.print(
                f"note: {t.workers} of the {t.asked} workers asked for ran: agents are spread over workers by "
                f"hashing, and a worker with no agent is not started (`fleet plan --workers {t.asked}` shows the "
                "spread)", markup=False)

    task = progress.add_task("run", total=ticks)
    spread_told: list[int] = []
    try:
        report = run(directory, ticks=ticks, workers=workers, remote=remote, provider=provider, push=push,
                     deadline=deadline, on_start=started, on_tick=ticked)
    except ProviderUnavailable as e:
        raise UsageError(e.for_option("--provider")) from None
    finally:
        if progress.live.is_started:
            progress.stop()
    data = report.to_json()
    if as_json:
        emit(data, True, lambda: None)
    else:
        # one row per figure: it fits any terminal, and no two figures share a number
        table = Table(title="fleet run", show_header=False)
        table.add_column("what")
        table.add_column("", justify="right")
        last_tick = "none ran" if data["tick"] is None else data["tick"]
        for what, value in (("ticks", len(report.ticks)), ("last tick", last_tick),
                            ("applied", data["applied"]), ("no-op", data["noop"]),
                            ("held for a person", data["held_deltas"]), ("quarantined", data["quarantined"]),
                            ("conflicts opened or joined", data["held"]), ("decisions applied", len(data["resolved"])),
                            ("tokens", f"{data['tokens']:,}"), ("cost", f"${data['cost_usd']:.4f}"),
                            ("seconds", f"{report.seconds:.1f}")):
            table.add_row(what, str(value))
        console.print(table)
        first = report.ticks[0].tick if report.ticks else None
        span = "no tick" if first is None else f"tick {first}" if first == data["tick"] else f"ticks {first}-{data['tick']}"
        console.print(f"fleet run: {span} merged, {data['applied']} applied, {data['noop']} no-op, "
                      f"{data['held_deltas']} held, {data['quarantined']} quarantined, {data['tokens']:,} tokens, "
                      f"${data['cost_usd']:.4f}, {report.seconds:.1f}s", markup=False, highlight=False)
        if report.interrupted and report.published_unseen is not None:
            console.print(f"interrupted after tick {report.published_unseen} was published (not counted above: "
                          "`fleet status` shows it); nothing half-done was left behind")
        elif report.interrupted:
            console.print("interrupted: no half-done work was left behind; what finished workers pushed waits for "
                          "the merge, and `fleet run` resumes there")
    if report.stopped:
        done = f"{len(report.ticks)} tick(s) ran and are merged; " if report.ticks else ""
        console.print(f"stopped: {done}{report.stopped}", markup=False)
    if report.interrupted:
        sys.exit(130)
    if report.stopped and not report.ticks:
        sys.exit(3)  # nothing to do until the budget resumes or the other run's tick is merged
    every = sum(t.applied + t.noop + t.held_deltas + t.quarantined for t in report.ticks)
    if report.ticks and every and data["failed"] == every:
        why = next(t.first_error for t in report.ticks if t.first_error)
        raise FleetError(f"every turn of the run failed ({data['failed']} of {every}), so nothing changed: {why}")
