"""Self-dispatch: the merge that published a tick starts the next run of the tick workflow.

GitHub's cron is late by hours, and events made with ``GITHUB_TOKEN`` start
no workflow, except ``workflow_dispatch``: so the merge job, once its push of
main won, dispatches the next run itself (``POST .../actions/workflows/
{workflow}/dispatches`` through PyGithub; the job needs ``actions: write``).
GitHub cannot delay a dispatch, so the dispatched run's plan waits until its
tick is due (``fleet plan --wait``, at most ``run.every``).

Only a merge that published dispatches, and a tick is published once (the
compare-and-swap on main), so each tick passes the chain on once. Should two
runs of one chain ever exist anyway (a dispatch GitHub carried out but
answered with a 502, which PyGithub retries; a scheduled run that found the
tick due), they meet at the start record (``fleet.clock``): one starts the
tick and dispatches the next, the other exits 3. The chain never forks.

What ends it: the stop switch (the repository variable ``FLEET_STOP``, or
``run.self_dispatch: false``), a spent day or month budget (the plan says
when it resumes; cron starts the first tick after), a fleet with no pace
(``run.every`` absent: cron and dispatches by hand start ticks, as before),
or GitHub's refusal. A pace longer than a run may wait (a job ends after six
hours) is kept by relays: the waiting run records a relay on fleet/clock and
its relay job dispatches the next run, which waits in turn. A chain started
by hand with ``ticks`` counts down: each run passes ``ticks - 1`` (and its
``workers`` and ``agents``) on; when the count is done the fleet's own paced
chain, if any, goes on.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any

from fleet.clock import MAX_WAIT, Clock, stop_switch
from fleet.config import Config, format_duration
from fleet.errors import UsageError
from fleet.github import GitHubSettings
from fleet.ids import printable
from fleet.repo import FleetRepo
from fleet.spend import spending, stamp, utc

DEFAULT_WORKFLOW = "tick.yml"


@dataclass
class Dispatch:
    """What the next run is dispatched with, and where (``from_env`` reads a job's settings)."""

    github: GitHubSettings
    workflow: str = DEFAULT_WORKFLOW  # a file name in .github/workflows/, or a workflow id
    ref: str = "main"
    ticks_left: int | None = None  # a chain started by hand with `ticks`: this run's tick included
    workers: str = ""  # passed on while the count lasts
    agents: str = ""
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, what: str = "--dispatch", **kw: Any) -> Dispatch:
        """From the job's environment: GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_TOKEN
        (as for conflict pull requests), and GITHUB_WORKFLOW_REF (this workflow's file
        and ref, so the run dispatches its own workflow where it runs)."""
        env = dict(os.environ if env is None else env)
        settings = GitHubSettings.from_env(env, what=what)  # what needs them: the option, or the command
        workflow, ref = DEFAULT_WORKFLOW, env.get("GITHUB_REF_NAME") or "main"
        wf_ref = env.get("GITHUB_WORKFLOW_REF", "")
        if "@" in wf_ref:
            path, _, full = wf_ref.partition("@")
            workflow = path.rsplit("/", 1)[-1] or workflow
            ref = full.removeprefix("refs/heads/").removeprefix("refs/tags/") or ref
        return cls(settings, workflow, ref, env=env, **kw)


def _client(settings: GitHubSettings) -> Any:
    from github import Auth, Github, GithubRetry

    return Github(base_url=settings.api_url.rstrip("/"), auth=Auth.Token(settings.token),
                  retry=GithubRetry(total=6, secondary_rate_wait=60, max_rate_limit_wait=300),
                  seconds_between_requests=None, seconds_between_writes=settings.seconds_between_writes,
                  lazy=True)  # one request: the dispatch itself


def next_run(repo: FleetRepo, cfg: Config, tick: int, commit: str, d: Dispatch,
             at: _dt.datetime | None = None) -> dict[str, Any]:
    """After tick ``tick`` was published (main at ``commit``): dispatch the next run,
    or say why not. Never raises for GitHub's refusal: the tick is published, and
    a chain that broke is restarted by cron; the answer says what happened."""
    at = at or _dt.datetime.now(_dt.UTC)
    out: dict[str, Any] = {"dispatched": False, "workflow": d.workflow, "ref": d.ref, "inputs": None,
                           "after": tick, "next_due": None, "why": ""}
    every = cfg.run.every
    if every:
        start = Clock(repo).read()
        began = start.started if start is not None and start.tick == tick else at.timestamp()
        out["next_due"] = stamp(utc((int(began // every) + 1) * every))
    stop = stop_switch(d.env, cfg)
    if stop:
        out["why"] = stop
        return out
    spent = spending(repo, commit, cfg, at).stop()
    if spent is not None:
        out["why"] = f"no next run: {spent.why()}; the first scheduled run after that starts the chain again"
        return out
    inputs = {"after": str(tick)}
    if d.ticks_left is not None and d.ticks_left > 1:
        inputs.update(ticks=str(d.ticks_left - 1), **{k: v for k, v in (("workers", d.workers),
                                                                        ("agents", d.agents)) if v})
        out["why"] = f"the chain started by hand runs {d.ticks_left - 1} more tick(s)"
    elif not every:
        out["why"] = "no run.every: the next tick starts by cron or by hand" + (
            " (the ticks asked for are done)" if d.ticks_left is not None else "")
        return out
    elif every > MAX_WAIT:
        out["why"] = (f"the fleet keeps its own time: the next tick is due at {out['next_due']}, further away than "
                      f"a job may wait ({format_duration(MAX_WAIT)}), so runs wait in turn, each passing the chain on")
    else:
        out["why"] = f"the fleet keeps its own time: the next run waits until {out['next_due']}"
    return _send(d, inputs, out)


def relay_run(cfg: Config, after: int, relay: int, d: Dispatch) -> dict[str, Any]:
    """Pass the chain on: dispatch the run that waits after this one, which ``fleet
    plan --relay`` recorded on fleet/clock (one run of a chain relays once). The
    stop switch ends a chain here too."""
    out: dict[str, Any] = {"dispatched": False, "workflow": d.workflow, "ref": d.ref, "inputs": None,
                           "after": after, "relay": relay, "next_due": None, "why": ""}
    stop = stop_switch(d.env, cfg)
    if stop:
        out["why"] = stop
        return out
    inputs = {"after": str(after), "relay": str(relay)}
    if d.ticks_left is not None:  # the chain started by hand counts ticks, not relays: its count passes on whole
        inputs.update(ticks=str(d.ticks_left), **{k: v for k, v in (("workers", d.workers),
                                                                    ("agents", d.agents)) if v})
    out["why"] = f"relay {relay} of the chain after tick {after}: the next run waits in turn"
    return _send(d, inputs, out)


def _send(d: Dispatch, inputs: dict[str, str], out: dict[str, Any]) -> dict[str, Any]:
    """The dispatch itself; GitHub's refusal, or no GitHub at all, is an answer, not an error."""
    out["inputs"] = inputs
    from github import GithubException

    try:
        gh = _client(d.github)
        workflow = gh.get_repo(d.github.repository).get_workflow(d.workflow)
        workflow.create_dispatch(d.ref, inputs, throw=True)
    except GithubException as e:
        message = e.data.get("message") if isinstance(e.data, dict) else None
        out["why"] = (f"GitHub refused the dispatch of {d.workflow} on {d.ref}: {e.status} "
                      f"{printable(str(message or e), 300)}; the chain is broken until a scheduled run starts it "
                      "(the merge job needs permissions: actions: write)")
        return out
    except OSError as e:  # the network (requests' errors are OSErrors): the tick is published all the same
        out["why"] = (f"GitHub refused the dispatch of {d.workflow} on {d.ref}: it could not be reached "
                      f"({printable(str(e), 300)}); the chain is broken until a scheduled run starts it")
        return out
    out["dispatched"] = True
    return out


def parse_ticks(value: str | None) -> int | None:
    """The ``ticks`` input: empty for none, else a count of at least 1."""
    if value is None or not value.strip():
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"--ticks-left {value!r}: a number of ticks, at least 1")
    return n
