"""`fleet merge`: apply pending deltas to main, validate, commit, push.

The merge is the single writer of main. It fetches, decides the next tick with
the engine, writes one commit, and publishes it with a compare-and-swap; if
another merge won the race it starts over from the new main, where the deltas
the winner applied are now duplicates in the ledger. Worker branches and inbox
files are removed only after the push, so a merge killed at any step loses
nothing: the next one sees the same deltas and applies each exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fleet import canonical, faults, fieldindex, profile_merge, summary, tick_messages, tick_tasks
from fleet.cli import MAX_COUNT, check_output, dir_option, emit, json_option, remote_option
from fleet.clock import Clock
from fleet.config import FLEET_PATH, Config
from fleet.delta import Arrival, made_by
from fleet.dispatch import Dispatch, next_run, parse_ticks
from fleet.engine import TickResult, merge_tick
from fleet.errors import FleetError, NothingToDo
from fleet.github import ConflictPRs, GitHubSettings
from fleet.ids import printable
from fleet.ledger import TRAILERS, pruned_ledgers
from fleet.outside import adopt_local_main, main_refusal
from fleet.repo import FleetRepo, inbox_arrivals
from fleet.state import GitSnapshot

ATTEMPTS = 5
LIST_LIMIT = 200


@dataclass
class MergeReport:
    tick: int
    commit: str
    published: bool
    remote: str | None
    applied: int  # deltas whose changes all took effect; no-op and held ones are counted apart
    late: int
    duplicates: int
    quarantined: list[dict[str, Any]]
    held: list[str]
    docs_changed: int
    resolved: list[str]
    attempts: int
    sources: int = 0
    pulls: dict[str, Any] | None = None  # conflict pull requests, with --github
    agents: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)  # "provider model" of the applied deltas
    tasks: dict[str, Any] | None = None  # outcomes of tasks worked in the tick: done, failed, refused
    dispatch: dict[str, Any] | None = None  # with --dispatch: the next run of the tick workflow, or why none
    lessons: dict[str, Any] | None = None  # lessons written to the knowledge repository (fleet.knowledge)
    messages: dict[str, Any] | None = None  # the message bus: delivered, refused, acked, heartbeats (fleet.tick_messages)
    noop: int = 0  # explicit empty deltas: in the ledger, nothing changed
    held_deltas: int = 0  # deltas with a change held for a person (``held`` names the conflicts)
    reverts: list[dict[str, Any]] = field(default_factory=list)  # `fleet revert`s applied or refused
    left_in_inbox: list[dict[str, str]] = field(default_factory=list)  # files of an inbox that are no deltas: kept

    def to_json(self) -> dict[str, Any]:
        return {
            "tick": self.tick,
            "commit": self.commit,
            "published": self.published,
            "remote": self.remote,
            "applied": self.applied,
            "noop": self.noop,
            "held_deltas": self.held_deltas,
            "merged": self.applied + self.noop + self.held_deltas,
            "reverts": self.reverts,
            "left_in_inbox": self.left_in_inbox,
            "late": self.late,
            "duplicates": self.duplicates,
            "quarantined": [{k: q[k] for k in ("path", "source", "reason")} for q in self.quarantined],
            "held": self.held,
            "resolved": self.resolved,
            "docs_changed": self.docs_changed,
            "attempts": self.attempts,
            "sources": self.sources,
            "pulls": self.pulls,
            "agents": self.agents,
            "usage": self.usage,
            "models": self.models,
            "tasks": self.tasks,
            "dispatch": self.dispatch,
            "lessons": self.lessons,
            "messages": self.messages,
        }


def message(result: TickResult, notes: Sequence[str] = ()) -> str:
    """The tick commit's message: a summary line, the deltas by name, ``notes``, trailers."""
    r = result
    lines = [
        f"fleet: tick {r.tick}: {r.changed} applied, {len(r.quarantined)} quarantined, {len(r.noop)} no-op, "
        f"{len(r.held_deltas)} held",
        "",
    ]
    if r.applied:
        ids = [d.id for d in r.applied]
        if len(ids) <= LIST_LIMIT:
            lines += ["Applied:"] + [f"  {i}" for i in ids]
        else:
            lines += [f"Applied: {len(ids)} deltas, named in state/ledger/{r.tick}/ (late ones in earlier tick folders)"]
    if r.quarantined:
        lines += ["Quarantined:"] + [f"  {q['path']} ({q['source']}): {q['reason']}" for q in r.quarantined[:LIST_LIMIT]]
        if len(r.quarantined) > LIST_LIMIT:
            lines += [f"  ... and {len(r.quarantined) - LIST_LIMIT} more in state/quarantine/{r.tick}/"]
    if r.held:
        lines += ["Held for a person:"] + [f"  {c} (state/conflicts/{c}.json)" for c in r.held]
    if r.resolved:
        lines += ["Decided (resolutions applied):"] + [f"  {c}" for c in r.resolved]
    if r.reverts:
        lines += ["Reverted (fleet revert):"] + [f"  {v['revert']}: {v['status']}" + (f" ({v['reason']})" if "reason" in v else "")
                                                 for v in r.reverts]
    lines += list(notes)
    # Text from outside (file names, reasons) is one printable line each: no
    # input can add a line of its own, let alone a trailer.
    lines = [printable(line, 2000) for line in lines]
    counts = (r.tick, len(r.applied), r.late, len(r.quarantined), len(r.held), len(r.resolved))
    lines += ["", *(f"{key}: {n}" for key, n in zip(TRAILERS, counts, strict=True))]
    return "\n".join(lines) + "\n"


def merge(
    path: Path,
    *,
    tick: int | None = None,
    inbox: tuple[Path, ...] = (),
    remote: str | None = None,
    dry_run: bool = False,
    allow_empty: bool = False,
    outside: list[dict[str, Any]] = (),
    github: GitHubSettings | None = None,
    dispatch: Dispatch | None = None,
    meanings_from: Path | None = None,
    propose_to: Path | None = None,
) -> MergeReport:
    """Merge the next tick. ``outside``: fallback decisions on held conflicts
    whose pull request was closed unmerged (fleet.github), applied first.
    ``dispatch``: once this merge published, start the next run of the tick
    workflow (fleet.dispatch); a merge that did not publish dispatches nothing.

    Without ``tick``, a tick that a run started and still holds (its start
    record on fleet/clock, ``fleet.clock``) is left to that run's own merge."""
    with canonical.no_gc():
        return _merge(path, tick, inbox, remote, dry_run, allow_empty, outside, github, dispatch, meanings_from,
                      propose_to)


def _merge(path: Path, tick: int | None, inbox: tuple[Path, ...], remote: str | None, dry_run: bool,
           allow_empty: bool, outside: list[dict[str, Any]], github: GitHubSettings | None,
           dispatch: Dispatch | None, meanings_from: Path | None, propose_to: Path | None) -> MergeReport:
    repo = FleetRepo(path, remote)
    prs = ConflictPRs(github) if github else None
    asked: dict[str, dict[str, Any]] = {}  # the model's merges ('meaning' policy) by inputs, across attempts
    judged = None  # the main whose person's commits were judged (fleet.outside.main_refusal)
    for attempt in range(1, ATTEMPTS + 1):
        repo.fetch()
        head = repo.main()
        if head != judged:  # a change fleet refuses, pushed to main around it: nothing is built on it
            refused = main_refusal(repo.git, head)
            if refused is not None:
                raise FleetError(refused.line("nothing was merged"))
            judged = head
        base = repo.snapshot(head)
        closed: list[dict[str, Any]] = []
        if prs is not None:  # pull requests closed unmerged: their fallback applies this tick
            closed = prs.fallbacks(base)
        decided = list(outside) + closed
        nxt = base.tick + 1
        if tick is not None and tick != nxt:
            if tick <= base.tick:
                raise NothingToDo(f"tick {tick} is already merged (main is at tick {base.tick})")
            raise FleetError(f"--tick {tick}: main is at tick {base.tick}, so the next merge is tick {nxt}")
        if tick is None and attempt == 1:
            held = Clock(repo).read()
            if held is not None and held.tick == nxt and held.lease_until > time.time():
                raise NothingToDo(
                    f"tick {nxt} is under way: {held.by} started it ({held.how}) and its own merge publishes it; "
                    f"this merge leaves the deltas to it until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(held.lease_until))} "
                    f"(`fleet merge --tick {nxt}` merges them now)")
        sources = repo.sources()
        max_bytes = base.config.limits.max_delta_bytes
        signed = base.config.allowed_signers
        arrivals = repo.arrivals(sources, max_bytes, (signed, repo.git.show(head, signed)) if signed else None)
        files = [f for folder in inbox for f in inbox_arrivals(folder, max_bytes, repo.path)]
        foreign = [(a, f) for a, f in files if a.foreign]  # not deltas: named, left where they are
        files = [(a, f) for a, f in files if not a.foreign]
        arrivals += [a for a, _ in files]
        if not arrivals and not allow_empty and not decided and not base.under("state/resolutions"):
            synced = prs.sync(repo, base, head) if prs else None
            opened = f"; opened {len(synced.opened)} conflict pull request(s)" if synced and synced.opened else ""
            raise NothingToDo(f"no pending deltas (main is at tick {base.tick}){opened}{_foreign_note(foreign)}")
        pruned = pruned_ledgers(repo.git, head, base)
        result = merge_tick(base, arrivals, decided, pruned=pruned)
        if meanings_from is not None:  # texts held under 'meaning': the model merges, here or in a job of its own
            meanings = profile_merge.recheck(base, result, profile_merge.read_answers(meanings_from), str(meanings_from))
        else:
            meanings = profile_merge.propose(base, result, asked)
        if propose_to is not None:
            profile_merge.write_answers(propose_to, meanings)
        if meanings:
            result = merge_tick(base, arrivals, decided, meanings, pruned=pruned)
        if not result.applied and not result.quarantined and not result.resolved and not result.reverts \
                and not allow_empty:
            if not dry_run:
                repo.delete_sources(sources)
                _remove(files, inbox)
            raise NothingToDo(
                f"nothing new: {len(result.duplicates)} delta(s) were merged before, applied or quarantined "
                f"(main is at tick {base.tick}; `fleet log --delta ID` says which)"
                + _foreign_note(foreign))
        # Task outcomes go to the queue before main moves: applying them again on a
        # retry changes nothing, and none is lost if this merge dies in between.
        worked = None if dry_run else _task_outcomes(repo, result)
        lessons = None if dry_run else _lessons(repo, base.config, result)  # likewise: a rerun writes no file twice
        # Messages too, with ids of their deltas: delivered again on a retry, they are there once.
        sent = None if dry_run else tick_messages.deliver(repo, base.config, result.tick, result.applied)
        faults.point("merge.before-commit")
        notes = ((worked.lines() if worked else []) + profile_merge.lines(meanings) + _lesson_lines(lessons)
                 + (sent.lines() if sent else []))
        commit = repo.git.write_commit(head, message(result, notes), result.writes, result.deletes)
        faults.point("merge.after-commit")
        published = False
        pr_report = None
        if not dry_run:
            if not repo.publish(commit, head, sources, _field_index(repo, base, commit, result.writes)):
                continue  # another merge moved main (or a branch moved): start over
            published = True
            faults.point("merge.after-push")
            _remove(files, inbox)
            if prs is not None:
                pr_report = prs.sync(repo, repo.snapshot(commit), commit)
                pr_report.fallbacks = closed
            repo.git.gc_auto()
        chained = next_run(repo, base.config, result.tick, commit, dispatch) if dispatch and published else None
        return MergeReport(
            tick=result.tick,
            commit=commit,
            published=published,
            remote=repo.remote,
            applied=result.changed,
            noop=len(result.noop),
            held_deltas=len(result.held_deltas),
            reverts=result.reverts,
            left_in_inbox=[{"path": printable(str(f)), "why": a.refused or ""} for a, f in foreign],
            late=result.late,
            duplicates=len(result.duplicates),
            quarantined=result.quarantined,
            held=result.held,
            docs_changed=result.docs_changed,
            resolved=result.resolved,
            attempts=attempt,
            pulls=pr_report.to_json() if pr_report else None,
            agents=len({d.agent for d in result.applied}),
            usage=canonical.load(result.writes[FLEET_PATH], FLEET_PATH)["last"]["usage"],
            models=made_by(d.meta for d in result.applied),
            sources=len(sources) + len(files),
            tasks=worked.to_json() if worked else None,
            dispatch=chained,
            lessons=lessons,
            messages=sent.to_json() if sent else None,
        )
    raise FleetError(f"main kept moving: gave up after {ATTEMPTS} attempts; run fleet merge again")


def _field_index(repo: FleetRepo, base: GitSnapshot, commit: str,
                 writes: dict[str, bytes]) -> tuple[str, str | None] | None:
    """(the field index of main ``commit``, the index it replaces) for publish to push
    with main (fleet.fieldindex.for_publish), from the documents the tick wrote."""
    return fieldindex.for_publish(repo.git, base, commit, repo.index_ref, writes)


def _task_outcomes(repo: FleetRepo, result: TickResult) -> tick_tasks.Applied | None:
    """Complete or fail, each with its fence, the tasks the tick's applied deltas report on."""
    reported = [(d.agent, o) for d in result.applied for o in d.meta.get("tasks") or []]
    if not reported:
        return None
    from fleet.tasks import TaskQueue

    ch, _ = TaskQueue(repo).change(lambda q, cfg, at: tick_tasks.apply_outcomes(q, cfg, at, reported),
                                    priority=True)  # a holder's outcome: it must not lose every race to claimers
    applied: tick_tasks.Applied = ch.result
    return applied


def _lessons(repo: FleetRepo, cfg: Config, result: TickResult) -> dict[str, Any] | None:
    """Write the lessons of the applied deltas to the knowledge repository (fleet.knowledge)."""
    if cfg.knowledge.lessons is None:
        return None
    from fleet import knowledge

    return knowledge.write_report(repo.path, cfg, result.applied, result.tick)


def _lesson_lines(lessons: dict[str, Any] | None) -> list[str]:
    if not lessons:
        return []
    if lessons.get("error"):
        return [f"Lessons not written: {lessons['error']}"]
    pushed = f", pushed {lessons['commit'][:12]}" if lessons["commit"] else ""
    return [f"Lessons written to remote {lessons['remote']} ({lessons['ref']}): {len(lessons['files'])} new, "
            f"{lessons['present']} there already{pushed}"]


def _foreign_note(foreign: list[tuple[Arrival, Path]]) -> str:
    """The files of an inbox that are no delta files, left where they are (one clause)."""
    if not foreign:
        return ""
    shown = ", ".join(printable(str(f), 120) for _, f in foreign[:5])
    more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
    return f"; {len(foreign)} file(s) in the inbox are no delta files, left there unread: {shown}{more}"


def _remove(files: list[tuple[Arrival, Path]], inbox: tuple[Path, ...]) -> None:
    """Take every decided entry out of the inbox (a link itself, never what it
    points to), then the folders that are left empty."""
    roots = {folder.absolute() for folder in inbox}
    parents: set[Path] = set()
    for _, f in files:
        if not f.is_dir() or f.is_symlink():
            f.unlink(missing_ok=True)
        parents.add(f.absolute() if f.is_dir() and not f.is_symlink() else f.absolute().parent)
    # Up from each decided entry while folders are empty (deepest first; never
    # the inbox itself, never a folder that still holds something).
    for here in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        while here not in roots and any(root in here.parents for root in roots):
            try:
                here.rmdir()
            except OSError:
                break  # not empty, or gone
            here = here.parent


# -- the command line --------------------------------------------------------
@click.command("merge")
@dir_option
@json_option
@remote_option
@click.option("--tick", type=click.IntRange(0, MAX_COUNT), default=None, help="Merge only if this is the next tick.")
@click.option("--inbox", "inbox", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Also take delta files from this folder (repeatable); they are removed once merged.")
@click.option("--dry-run", is_flag=True, help="Decide and build the commit, but publish nothing.")
@click.option("--allow-empty", is_flag=True, help="Advance the tick even with no deltas.")
@click.option("--meanings", "meanings_from", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The model's answers for fields under the 'meaning' policy, written by --propose-meanings in a "
                   "job that runs the model; each is checked again, and this merge calls no model.")
@click.option("--propose-meanings", "propose_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ask the model to merge the fields held under the 'meaning' policy and write its checked answers "
                   "to this file, for a later --meanings; implies --dry-run (for a job that holds no write token).")
@click.option("--github", "use_github", is_flag=True,
              help="Open or update a pull request per held conflict, and apply the fallback of closed ones "
                   "(GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_TOKEN).")
@click.option("--dispatch", "dispatch_next", is_flag=True,
              help="Once this merge published, dispatch the next run of this workflow (GITHUB_WORKFLOW_REF, else "
                   "tick.yml on main) through the GitHub API, unless the stop switch (FLEET_STOP, "
                   "run.self_dispatch false) is on, a day or month budget is spent, or no run.every is set.")
@click.option("--ticks-left", default=None, metavar="N",
              help="With --dispatch: the ticks a chain started by hand still runs, this one included; the next run "
                   "gets N-1 (empty: none).")
@click.option("--next-workers", default="", metavar="W", help="With --ticks-left: the next run's workers input.")
@click.option("--next-agents", default="", metavar="A,B", help="With --ticks-left: the next run's agents input.")
def merge_command(directory: Path, as_json: bool, remote: str | None, tick: int | None,
                  inbox: tuple[Path, ...], dry_run: bool, allow_empty: bool, meanings_from: Path | None,
                  propose_to: Path | None, use_github: bool, dispatch_next: bool,
                  ticks_left: str | None, next_workers: str, next_agents: str) -> None:
    """Apply pending deltas to main: validate, commit one tick, publish."""
    dry_run = dry_run or propose_to is not None
    if propose_to is not None:
        check_output(directory, propose_to, "--propose-meanings", folder=False, ours=profile_merge.answers_file)
    settings = GitHubSettings.from_env() if use_github else None
    chain = Dispatch.from_env(ticks_left=parse_ticks(ticks_left), workers=next_workers.strip(),
                              agents=next_agents.strip()) if dispatch_next and not dry_run else None
    adopted = None if dry_run else adopt_local_main(directory, remote)  # your decisions on main are applied, not ignored
    if adopted:
        click.echo(adopted, err=True)
    r = merge(directory, tick=tick, inbox=inbox, remote=remote, dry_run=dry_run, allow_empty=allow_empty,
              github=settings, dispatch=chain, meanings_from=meanings_from, propose_to=propose_to)

    def text() -> None:
        late = f" ({r.late} late)" if r.late else ""
        click.echo(f"tick {r.tick}: {r.applied} applied{late}, {len(r.quarantined)} quarantined, {r.noop} no-op, "
                   f"{r.held_deltas} held ({len(r.held)} conflict(s) opened or joined), {r.duplicates} duplicate(s) dropped, {r.docs_changed} document(s) changed"
                   + (f", {len(r.resolved)} decision(s) applied" if r.resolved else ""))
        for q in r.quarantined:
            click.echo(f"  quarantined {q['path']} ({q['source']}): {q['reason']}")
        for c in r.held:
            click.echo(f"  held for a person: state/conflicts/{c}.json")
        for c in r.resolved:
            click.echo(f"  decided: {c} (a person's resolution applied)")
        for v in r.reverts:
            if v["status"] == "applied":
                click.echo(f"  reverted: {v['revert']} ({', '.join(v['docs'])} as if it never came)")
            else:
                click.echo(f"  revert of {v['revert']} refused: {v['reason']}")
        if r.pulls:
            p = r.pulls
            click.echo(f"conflict pull requests: {len(p['opened'])} opened, {len(p['updated'])} updated, "
                       f"{len(p['fallbacks']) if p.get('fallbacks') else 0} closed unmerged (fallback), "
                       f"{len(p['deferred'])} deferred to the next run, {p['requests']} GitHub requests")
            for o in p["opened"]:
                click.echo(f"  opened #{o['number']} for {o['conflict']} ({o['branch']})")
            for o in p.get("closed") or []:
                click.echo(f"  closed #{o['number']}: {o['conflict']} was decided on main another way")
        if r.left_in_inbox:
            click.echo(f"left in the inbox, unread: {len(r.left_in_inbox)} file(s) that are no "
                       "delta files (a delta file is <worker>/<stream>/<id>.json):")
            for x in r.left_in_inbox[:LIST_LIMIT]:
                click.echo(f"  {x['path']}: {x['why']}")
        where = f"to {r.remote}" if r.remote else "locally"
        if r.published:
            click.echo(f"published main {r.commit[:12]} {where}")
        else:
            click.echo(f"dry run: built {r.commit[:12]}, published nothing")
        if r.dispatch is not None:
            click.echo(_chained(r.dispatch))
        for line in _lesson_lines(r.lessons):
            click.echo(line, err=bool(r.lessons and r.lessons.get("error")))
        if r.messages:
            m = r.messages
            click.echo(f"messages: {m['delivered']} delivered ({m['already']} already), {len(m['refused'])} refused, "
                       f"{m['acked']} acked, {m['heartbeats']} heartbeat(s)"
                       + (f"; pushed {m['pushed'][:12]}" if m["pushed"] else "")
                       + (f"; NOT DELIVERED: {m['error']}" if m["error"] else ""))

    emit(r.to_json(), as_json, text)
    tokens, cost = summary.money(r.usage)
    summary.table(f"fleet merge: tick {r.tick}" + ("" if r.published else " (dry run: nothing published)"),
                  {"models": summary.cell(", ".join(r.models) or "none"), "agents": r.agents, "applied": r.applied,
                   "no-op": r.noop, "held": r.held_deltas, "conflicts": len(r.held), "quarantined": len(r.quarantined),
                   "tokens": tokens, "cost": cost},
                  [f"decided: {c}" for c in r.resolved]
                  + [f"pull request #{o['number']} opened for {o['conflict']}" for o in (r.pulls or {}).get("opened", [])]
                  + ([_chained(r.dispatch)] if r.dispatch is not None else []))
    summary.quarantined(r.quarantined)
    if r.dispatch is not None and not r.dispatch["dispatched"] and "refused" in r.dispatch["why"]:
        summary.warning("fleet: next run not dispatched", r.dispatch["why"])


def _chained(d: dict[str, Any]) -> str:
    """One line on the next run: dispatched (with what), or why not."""
    if d["dispatched"]:
        inputs = ", ".join(f"{k}={v}" for k, v in sorted(d["inputs"].items()))
        return f"next run: dispatched {d['workflow']} on {d['ref']} ({inputs}): {d['why']}"
    return f"next run: none: {d['why']}"
