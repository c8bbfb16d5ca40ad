"""`fleet work --worker I --workers W [--tick N]`: one worker's slice of one tick.

Fetch main (shallow, into the worker's private cache), refuse any tick but
the next, run this worker's agents through the provider, write one delta file
per agent turn (in memory: no worktree, no checkout), commit, and push the worker branch
``fleet/t<tick>/w<I>`` with a lease that says it must not exist yet. In
coalesced mode (``--outbox DIR``) the delta files are handed to the fan-in
merge instead of pushed. SIGTERM or a deadline publishes the finished turns
and an explicit empty delta with the error for each unfinished one; SIGINT
publishes nothing, so the next run does the tick again.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fleet import canonical, faults, fieldindex, keys, knowledge, signing, summary, tick_tasks
from fleet import delta as delta_mod
from fleet import world as world_mod
from fleet.cli import check_output, dir_option, emit, flag_seconds, json_option, remote_option, split
from fleet.config import CONFIG_PATH, Limits
from fleet.delta import Arrival, file_path
from fleet.errors import FleetError, NothingToDo, UsageError
from fleet.git import Git, RefUpdate, common_dir, network_deadline, toplevel
from fleet.ids import printable
from fleet.plan import UnknownAgents, agents_of, roster, worker_name
from fleet.providers import ProviderUnavailable, models
from fleet.providers import get as get_provider
from fleet.records import Usage
from fleet.repo import worker_branch
from fleet.state import GitSnapshot
from fleet.streams import run_turns
from fleet.workspace import FLEET_DIR, INDEX_REF, Terminated, Workspace, make_dirs, remote_url, remove_made
from fleet.world import View

PUSH_ATTEMPTS = 6


@dataclass
class WorkReport:
    worker: str
    tick: int
    agents: list[str]
    deltas: int
    errors: int
    branch: str | None
    pushed: bool
    outbox: str | None
    main: str
    seconds: float
    usage: dict[str, Any] = field(default_factory=dict)
    provider: str = ""
    models: list[str] = field(default_factory=list)  # the models that answered (or were asked, if none did)
    knowledge: list[dict[str, Any]] = field(default_factory=list)  # each knowledge source read: its commit, files
    bus_error: str | None = None  # the message bus could not be read: its agents saw no inbox this tick
    index: str = ""  # the field index (fleet.fieldindex): "read", or "not read: <why>" (main was read instead)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def work(
    path: Path,
    *,
    worker: int,
    workers: int,
    tick: int | None = None,
    remote: str | None = None,
    provider: str | None = None,
    outbox: Path | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    only_agents: list[str] | None = None,
) -> WorkReport:
    if not 1 <= worker <= workers:
        raise UsageError(f"--worker {worker}: must be between 1 and --workers ({workers})")
    # the cycle collector off, as for the merge: a worker reads tens of thousands of rows of
    # the field index, sorts and groups them and keeps them until it is done; its passes over
    # them cost a tenth of a worker at bigworld's size and free nothing
    with canonical.no_gc():
        return _work(path, worker=worker, workers=workers, tick=tick, remote=remote, provider=provider, outbox=outbox,
                     concurrency=concurrency, timeout=timeout, only_agents=only_agents)


def _work(
    path: Path,
    *,
    worker: int,
    workers: int,
    tick: int | None,
    remote: str | None,
    provider: str | None,
    outbox: Path | None,
    concurrency: int | None,
    timeout: float | None,
    only_agents: list[str] | None,
) -> WorkReport:
    started = time.monotonic()
    root = toplevel(path)
    url = remote_url(Git(root), remote)
    name = worker_name(worker)
    with Workspace(common_dir(root), name) as ws:
        main, delivered = ws.fetch(url)
        faults.point("work.after-fetch")
        snap = GitSnapshot(ws.cache, main)
        world_mod.warm(snap)  # the clock, config, schemas and declarations: one git process for them all
        nxt = snap.tick + 1
        if tick is not None and tick != nxt:
            raise FleetError(f"main is at tick {snap.tick}: a worker works only the next tick ({nxt}), not {tick}")
        cfg = snap.config
        world = world_mod.load(cfg, snap.read)  # a world that cannot run is refused before any turn
        agents = agents_of(roster(cfg.agents, only_agents), workers, name)
        branch = worker_branch(nxt, name)
        if not agents:
            raise NothingToDo(f"worker {name} has no agents at {workers} workers (tick {nxt})")
        if outbox is None and nxt in delivered:
            _already_delivered(ws, name, nxt, branch, agents, cfg.limits)
        if outbox is not None:  # what a run before this one (killed, or run again) handed over is not done twice
            handed = handed_over(outbox, name, nxt, cfg.limits)
            agents = [a for a in agents if a not in handed]
            if not agents:
                raise NothingToDo(f"worker {name} already handed tick {nxt} to {outbox} ({len(handed)} delta(s) "
                                  "wait there for the merge)")
        # a fleet that wants signed branches: know the key before any turn spends a token
        key = signing.signing_key(Git(root), CONFIG_PATH, name, cfg.allowed_signers, ws.cache.show(
            main, cfg.allowed_signers)) if cfg.allowed_signers and outbox is None else None
        # --timeout bounds the worker from its start: a remote that does not answer (a knowledge
        # source, the bus) waits no longer than it, and the turns get what is left
        deadline = None if timeout is None else started + timeout
        with network_deadline(deadline):
            held = _held_tasks(ws, url, cfg, agents)
            if cfg.knowledge.sources:  # its cache, if this run makes it, goes again if the run fails
                ws.own(common_dir(root) / FLEET_DIR / knowledge.CACHE / f"{name}.git")
            known = knowledge.fetch(common_dir(root), root, cfg, name)  # the one moment this worker's knowledge changes
            inboxes, bus_error = _inboxes(ws, url, cfg, agents)
        for warning in known.warnings:
            click.echo(f"fleet: warning: {warning}", err=True)
        prov = get_provider(provider, cfg)
        # the field index, when it describes this main: sections that sort or filter a whole
        # collection read its rows, not every document (fleet.fieldindex); else main itself
        index, no_index = fieldindex.open_index(ws.cache, INDEX_REF, main)
        view = View(snap, tick=nxt, index=index)
        with snap:  # the turns read main a few documents at a time (fleet.world.View): one cat-file for them all
            bodies = [_writable(b, prov.name) for b in _turns(ws, prov, snap, agents, nxt, name, workers, concurrency,
                                                              deadline, held, world, known.docs, inboxes, view)]
        # the delta files, in memory: written to the outbox, or committed straight from here (no
        # worktree: git is asked for nothing but the commit's objects)
        files = {file_path(body): keys.redact_bytes(canonical.dumps(body)) for body in bodies}
        errors = sum(1 for b in bodies if b["meta"].get("error"))
        pushed = False
        if outbox is not None:
            for rel, data in sorted(files.items()):
                _write_whole(outbox / rel, data)
        else:
            sha = ws.commit(main, nxt, files)
            if key is not None:
                sha = signing.sign(ws.cache, sha, key)
            faults.point("work.after-commit")
            _push(ws.cache, url, sha, branch)
            pushed = True
        # no turn, no figure: the report says {} as it always has
        usage = Usage.total(b["meta"].get("usage") for b in bodies).to_json() if bodies else {}
        answered = sorted({str(b["meta"]["model"]) for b in bodies if b["meta"].get("model")})
        return WorkReport(name, nxt, agents, len(bodies), errors, None if outbox else branch, pushed,
                          str(outbox) if outbox else None, main, round(time.monotonic() - started, 3), usage,
                          prov.name, answered or models(prov.name, cfg), known.read, bus_error,
                          "read" if view.index is not None else f"not read: {view.doubt or no_index}")


def handed_over(outbox: Path, worker: str, tick: int, limits: Limits) -> dict[str, Path]:
    """Agent -> its delta file of ``tick`` that ``worker`` already handed to ``outbox``
    (coalesced mode): a worker run again, or killed and run again, before the merge
    took them does only the turns still missing. In direct mode the worker branch's
    lease does this; an outbox has no lease, and every run makes new delta ids, so
    without it a rerun handed every turn over twice and the merge applied both. A file
    that is not such a delta (cut short by a kill before files were written whole) is
    not a turn done: the merge quarantines it, and its agent's turn is done again."""
    found: dict[str, Path] = {}
    folder = outbox / delta_mod.DELTA_DIR / worker
    try:
        files = sorted(folder.glob(f"*/t{tick}-{worker}-*.json"))
    except OSError:
        return found
    for f in files:
        try:
            if f.is_symlink() or not f.is_file() or f.stat().st_size > limits.max_delta_bytes:
                continue
            agent = delta_mod.turn_of(Arrival(str(outbox), f.relative_to(outbox).as_posix(), f.read_bytes()),
                                      limits, tick, worker)
        except OSError:
            continue
        if agent is not None:
            found.setdefault(agent, f)
    return found


def _already_delivered(ws: Workspace, worker: str, tick: int, branch: str, agents: list[str], limits: Limits) -> None:
    """``branch`` exists on the remote: done (NothingToDo) if it holds a delta of
    ``tick`` by ``worker`` for every one of ``agents``; else a one-line error. A
    branch this worker did not push (pushed early by someone else, or by a run with
    another worker count, whose w1 had other agents) would otherwise pass for this
    worker's turns, and the tick would advance without them."""
    ref = f"refs/fleet/delivered/t{tick}"
    listed = ws.cache.ls_tree(ref, f"{delta_mod.DELTA_DIR}/{worker}/")
    sizes = ws.cache.sizes(list(listed.values())) if listed else {}
    blobs = ws.cache.cat_blobs([sha for sha in listed.values() if sizes[sha] <= limits.max_delta_bytes])
    covered = {agent for path, sha in listed.items() if sha in blobs
               and (agent := delta_mod.turn_of(Arrival(ref, path, blobs[sha]), limits, tick, worker)) is not None}
    missing = [a for a in agents if a not in covered]
    if not missing:
        raise NothingToDo(f"worker {worker} already delivered tick {tick} ({branch})")
    shown = ", ".join(printable(a, 40) for a in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    raise FleetError(f"{branch} exists on the remote but holds no delta of tick {tick} by {worker} for {shown}: "
                     "this worker did not push it (another writer, or a run with another worker count); "
                     f"those turns are not done. Delete it (git push <remote> :{branch}) and run again, or "
                     "run the tick with `fleet run`, which merges what waits and runs the rest")


def _write_whole(dest: Path, data: bytes) -> None:
    """Write ``dest`` whole or not at all (a temporary name, then a rename): a worker
    killed while handing over leaves no file cut short to be read as a delta."""
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    for attempt in range(5):
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            part.write_bytes(data)
            os.replace(part, dest)
            return
        except FileNotFoundError:  # a shared outbox that another worker's failed run removed (empty): again
            part.unlink(missing_ok=True)
            if attempt == 4:
                raise
        except BaseException:  # a full disk, an interrupt: no part file is left behind
            part.unlink(missing_ok=True)
            raise


def _writable(body: dict[str, Any], provider: str) -> dict[str, Any]:
    """``body`` if fleet can write it as JSON exactly, else the explicit empty
    delta for that turn with the reason: one turn's bad output (a number
    beyond 64 bits, say) never costs the worker its other agents' deltas."""
    try:
        canonical.check(body)
        canonical.dumps(body)
        return body
    except (canonical.JSONProblem, TypeError, ValueError) as e:
        error = f"the turn's output cannot be written as JSON: {e}"
        return delta_mod.make(tick=body["tick"], worker=body["worker"], stream=body["stream"], agent=body["agent"],
                              meta={"provider": provider, "error": keys.redact(error)[:2000]})


def _held_tasks(ws: Workspace, url: str, cfg: Any, agents: list[str]) -> dict[str, dict[str, Any]]:
    """The task each of ``agents`` with task tools holds (handed out before the
    workers start), read from the queue: this job only reads it."""
    from fleet.repo import FleetRepo
    from fleet.store import now
    from fleet.tasks import TaskQueue

    wanted = [a for a in agents if tick_tasks.task_tools(cfg, a)]
    if not wanted:
        return {}
    tip = ws.fetch_tasks(url)
    if tip is None:
        return {}
    q = TaskQueue(FleetRepo(ws.cache.path)).read(tip, under="refs/fleet/queue/")  # the branch and its claim refs
    at = now()
    return {a: tick_tasks.brief(t) for a in wanted if (t := tick_tasks.held(q, a, at)) is not None}


def _inboxes(ws: Workspace, url: str, cfg: Any, agents: list[str]) -> tuple[dict[str, list[dict[str, Any]]] | None, str | None]:
    """The unacked messages of ``agents`` on the message bus (fleet.tick_messages): this job only reads them."""
    from fleet import tick_messages
    from fleet.repo import FleetRepo

    if not tick_messages.message_agents(cfg, agents):
        return None, None
    return tick_messages.read_inboxes(FleetRepo(ws.cache.path, url), cfg, agents)


def _turns(ws: Workspace, prov: Any, snap: GitSnapshot, agents: list[str], tick: int, worker: str, workers: int,
           concurrency: int | None, deadline: float | None,
           held: dict[str, dict[str, Any]] | None = None, world: Any = None,
           knowledge_docs: Any = (),
           inboxes: dict[str, list[dict[str, Any]]] | None = None, view: View | None = None) -> list[dict[str, Any]]:
    """Run the turns; on SIGTERM, keep what finished and mark the rest as errors."""
    finished: dict[str, dict[str, Any]] = {}

    def stopped(error: str) -> list[dict[str, Any]]:
        return [finished.get(a) or delta_mod.make(tick=tick, worker=worker, stream="s1", agent=a,
                                                  meta={"provider": prov.name, "error": error})
                for a in agents]

    if ws.terminated:  # SIGTERM came while we fetched: no turn starts
        return stopped("the worker was terminated (SIGTERM) before this turn started")

    async def main() -> list[dict[str, Any]]:
        try:
            return await run_turns(prov, snap, agents, tick=tick, worker=worker, workers=workers,
                                   concurrency=concurrency, deadline=deadline, finished=finished, tasks=held,
                                   world=world, knowledge_docs=knowledge_docs,
                                   inboxes=inboxes, view=view)
        finally:
            await prov.aclose()

    ws.interruptible = True
    try:
        return asyncio.run(main())
    except Terminated:
        return stopped("the worker was terminated (SIGTERM) before this turn finished")
    finally:
        ws.interruptible = False


def _push(cache: Git, url: str, sha: str, branch: str) -> None:
    """Push the worker branch; it must not exist yet (lease), with jittered retries."""
    ref = f"refs/heads/{branch}"
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        result = cache.push(url, [RefUpdate(ref, sha, None)], while_running=lambda: faults.point("work.during-push"))
        if result.outcome == "won":
            return
        if result.outcome == "lost":
            raise NothingToDo(f"{branch} already exists on the remote: this tick was delivered by another run")
        if attempt == PUSH_ATTEMPTS:
            raise FleetError(f"push of {branch} failed {PUSH_ATTEMPTS} times: {result.reason}")
        # Contention is per repository: back off with jitter so retries spread out.
        time.sleep(min(8.0, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.5))


# -- the command line --------------------------------------------------------
@click.command("work")
@dir_option
@json_option
@remote_option
@click.option("--worker", type=int, required=True, help="This worker's number, 1..W.")
@click.option("--workers", type=click.IntRange(1, 256), required=True, help="How many workers this tick has (W, 1 to 256).")
@click.option("--tick", type=int, default=None, help="Refuse to work unless this is the next tick.")
@click.option("--provider", default=None, help="auto, offline or anthropic (default: run.provider in config; auto is anthropic when ANTHROPIC_API_KEY is set).")
@click.option("--outbox", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Coalesced mode: write the delta files here for the fan-in merge instead of pushing.")
@click.option("--concurrency", type=click.IntRange(1, 2048), default=None,
              help="Agent turns in flight at once, 1 to 2048 (default: run.concurrency).")
@click.option("--timeout", type=float, default=None,
              help="Seconds until unfinished turns become error deltas (0: every turn does, at once).")
@click.option("--agents", default=None, help="Only these agents this tick (comma-separated).")
def work_command(directory: Path, as_json: bool, remote: str | None, worker: int, workers: int, tick: int | None,
                 provider: str | None, outbox: Path | None, concurrency: int, timeout: float | None,
                 agents: str | None) -> None:
    """One worker's slice of one tick, ending in a pushed delta set."""
    timeout = None if timeout is None else flag_seconds("--timeout", timeout, zero=True)
    made: list[Path] = []  # the outbox's folders this run made: removed again (if empty) when it fails
    if outbox is not None:  # an outbox is its own folder, or one workers of a tick share (deltas/ only)
        check_output(directory, outbox, "--outbox", folder=True,
                     ours=lambda f: all(p.name == "deltas" and p.is_dir() for p in f.iterdir()))
        try:  # made now, not after the turns have spent their tokens
            make_dirs(outbox, made)
        except OSError as e:
            remove_made(made)
            what = "a link to nowhere" if outbox.is_symlink() and not outbox.exists() else (e.strerror or str(e))
            raise UsageError(f"--outbox {printable(str(outbox), 200)}: cannot be made: {what}") from None
    try:
        try:
            r = work(directory, worker=worker, workers=workers, tick=tick, remote=remote, provider=provider,
                     outbox=outbox, concurrency=concurrency, timeout=timeout, only_agents=split(agents))
        except UnknownAgents as e:
            raise UsageError(f"--agents: {e}") from None
        except ProviderUnavailable as e:
            raise UsageError(e.for_option("--provider")) from None
    except BaseException:
        remove_made(made)  # (delta files it handed over before it failed stay: finished turns, and the folder with them)
        raise

    def text() -> None:
        where = f"pushed {r.branch}" if r.pushed else f"handed to {r.outbox}"
        click.echo(f"worker {r.worker}, tick {r.tick}: fetched main {r.main[:12]}; {r.deltas} delta(s) "
                   f"for {len(r.agents)} agent(s), {r.errors} error(s); {where} ({r.seconds:.1f}s); "
                   f"provider {r.provider}, model {', '.join(r.models)}")
        for k in r.knowledge:  # what this worker read of other repositories, and at which commit
            click.echo(f"knowledge: fetched {k['remote']} {k['ref']} {k['commit'][:12]}: {k['files']} file(s) "
                       f"under {k['path'] or '/'}" + (f", {k['refused']} refused" if k["refused"] else ""))
        if r.bus_error:
            click.echo(f"warning: the message bus could not be read, so no agent saw its inbox: {r.bus_error}")

    emit(r.to_json(), as_json, text)
    tokens, cost = summary.money(r.usage)
    summary.table(f"fleet work: worker {r.worker}, tick {r.tick}",
                  {"provider": r.provider, "model": summary.cell(", ".join(r.models)), "agents": len(r.agents),
                   "deltas": r.deltas, "errors": r.errors, "tokens": tokens, "cost": cost},
                  [f"pushed {r.branch}" if r.pushed else f"handed to {r.outbox}"])
