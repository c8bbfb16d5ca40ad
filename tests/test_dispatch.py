"""Self-dispatch through PyGithub against the local GitHub REST server, which
fronts the fleet's real bare origin and checks each dispatch against the
tick workflow on its main, as GitHub does: a merge that published dispatches
exactly one next run; merges that race start one; the stop switch, a spent
day budget and a fleet with no pace dispatch nothing and say why; and a
chain of dispatched runs never forks, however cron runs cut in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import Fleet

from fleet import canonical
from fleet.clock import MAX_WAIT
from fleet.commands.merge import merge
from fleet.commands.plan import plan
from fleet.delta import Op
from fleet.dispatch import Dispatch
from fleet.errors import NothingToDo
from fleet.git import Git
from fleet.github import GitHubSettings
from fleet.main import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers.github_api import TEST_TOKEN, GitHubAPI  # noqa: E402

T0 = 1_800_000_000  # a slot boundary for 10m


@pytest.fixture
def gh(origin_fleet: tuple[Fleet, Path]) -> Any:
    fleet, bare = origin_fleet
    with GitHubAPI(bare_repo=bare, owner="acme", repo="fleet", token=TEST_TOKEN) as api:
        settings = GitHubSettings(api.url, "acme/fleet", TEST_TOKEN, seconds_between_writes=0)
        yield fleet, bare, api, settings


def configure(bare: Path, run: dict[str, Any] | None = None, budgets: dict[str, Any] | None = None) -> None:
    """A person's change of the config on the origin's main, as a merged pull request makes it."""
    git = Git(bare)
    raw = json.loads(git.show("refs/heads/main", "state/config.json"))
    raw["run"] = {**raw.get("run", {}), **(run or {})}
    raw["budgets"] = {**raw.get("budgets", {}), **(budgets or {})}
    commit = git.write_commit(git.rev_parse("refs/heads/main"), "config\n", {"state/config.json": canonical.dumps(raw)}, [])
    git.run("update-ref", "refs/heads/main", commit)


def chain(settings: GitHubSettings, **kw: Any) -> Dispatch:
    return Dispatch(settings, "tick.yml", "main", env=kw.pop("env", {}), **kw)


def spend(fleet: Fleet, bare: Path, tick: int, tokens: int) -> None:
    """A worker's delta for ``tick`` that spent ``tokens``, on its branch at the origin."""
    body = fleet.delta("ada", Op("incr", "agents", "ada", ("karma",), 1), tick=tick,
                       meta={"model": "offline-1", "usage": {"input_tokens": tokens, "output_tokens": 0}})
    fleet.push(body)
    for ref in fleet.branches():
        fleet.git.run("push", "--quiet", str(bare), f"{ref}:{ref}")
        fleet.git.run("update-ref", "-d", ref)


def test_a_merge_that_published_dispatches_exactly_one_next_run(gh: Any) -> None:
    fleet, bare, api, settings = gh
    configure(bare, {"every": "10m"})
    r = merge(fleet.path, tick=1, allow_empty=True, dispatch=chain(settings))
    assert r.published and r.dispatch["dispatched"] is True
    [d] = api.dispatches
    assert (d.path, d.ref, d.inputs) == (".github/workflows/tick.yml", "main", {"after": "1"})
    assert d.head_sha == Git(bare).rev_parse("refs/heads/main")  # the run works on the tick just published
    assert r.dispatch["why"].startswith("the fleet keeps its own time: the next run waits until ")
    assert api.count("POST", r"/actions/workflows/tick\.yml/dispatches$") == 1
    # a rerun of the same merge publishes nothing, and so dispatches nothing
    with pytest.raises(NothingToDo):
        merge(fleet.path, tick=1, allow_empty=True, dispatch=chain(settings))
    assert len(api.dispatches) == 1
    # a dry run publishes nothing either
    merge(fleet.path, tick=2, allow_empty=True, dry_run=True, dispatch=chain(settings))
    assert len(api.dispatches) == 1


def clones(bare: Path, tmp: Path, n: int) -> list[Path]:
    """Each run's own checkout of the fleet, as each runner of a workflow has."""
    out = []
    for i in range(n):
        subprocess.run(["git", "clone", "-q", str(bare), str(tmp / f"run{i}")], check=True)
        out.append(tmp / f"run{i}")
    return out


def job_env(api: GitHubAPI) -> dict[str, str]:
    """A merge job's environment, pointed at the local GitHub."""
    env = {k: v for k, v in os.environ.items() if k not in ("FLEET_STOP", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY")}
    return {**env, "GITHUB_API_URL": api.url, "GITHUB_REPOSITORY": "acme/fleet", "GITHUB_TOKEN": TEST_TOKEN,
            "GITHUB_WORKFLOW_REF": "acme/fleet/.github/workflows/tick.yml@refs/heads/main",
            "FLEET_GITHUB_WRITE_SPACING": "0"}


def test_two_merges_racing_for_one_tick_start_one_next_run(gh: Any, tmp_path: Path) -> None:
    """Three runs that worked the same tick (each on its own runner) merge at once: one
    publishes and dispatches; the others find the tick merged, exit 3 and dispatch nothing."""
    fleet, bare, api, settings = gh
    configure(bare, {"every": "10m"})
    procs = [subprocess.Popen([sys.executable, "-m", "fleet", "merge", "--tick", "1", "--allow-empty", "--dispatch",
                               "--json"], cwd=where, env=job_env(api), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for where in clones(bare, tmp_path, 3)]
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes) == [0, 3, 3], [p.stderr.read() for p in procs]
    [winner] = [json.loads(p.stdout.read()) for p, code in zip(procs, codes) if code == 0]
    assert winner["published"] and winner["dispatch"]["dispatched"]
    assert [d.inputs for d in api.dispatches] == [{"after": "1"}]


@pytest.mark.parametrize("env,run,why", [
    ({"FLEET_STOP": "true"}, {"every": "10m"}, "the stop switch is on (FLEET_STOP=true)"),
    ({"FLEET_STOP": "false"}, {"every": "10m", "self_dispatch": False}, "run.self_dispatch is false"),
    ({}, {}, "no run.every: the next tick starts by cron or by hand"),
])
def test_what_dispatches_nothing_says_why(gh: Any, env: dict[str, str], run: dict[str, Any], why: str) -> None:
    fleet, bare, api, settings = gh
    configure(bare, run)
    r = merge(fleet.path, tick=1, allow_empty=True, dispatch=chain(settings, env=env))
    assert r.published and r.dispatch["dispatched"] is False and why in r.dispatch["why"]
    assert api.dispatches == [] and api.count("POST") == 0


def test_a_spent_day_budget_stops_the_chain_and_says_why(gh: Any) -> None:
    fleet, bare, api, settings = gh
    configure(bare, {"every": "10m"}, {"day": {"tokens": 1000}})
    spend(fleet, bare, 1, 400)
    assert merge(fleet.path, dispatch=chain(settings)).dispatch["dispatched"] is True
    spend(fleet, bare, 2, 700)  # the day has now spent 1,100 of its 1,000 tokens: the tick is kept
    r = merge(fleet.path, dispatch=chain(settings))
    assert r.published and r.applied == 1
    assert r.dispatch["dispatched"] is False
    assert r.dispatch["why"].startswith("no next run: budgets.day is spent (1,100 of 1,000 tokens since ")
    assert "midnight UTC; the first scheduled run after that starts the chain again" in r.dispatch["why"]
    assert [d.inputs["after"] for d in api.dispatches] == ["1"]
    # and the plan of any run says the same, and when it resumes
    p = plan(fleet.path, start=True, mode="hand")
    assert not p["due"] and p["reason"] == "budget" and p["next_due"].endswith("T00:00:00Z")


def test_a_chain_started_by_hand_counts_its_ticks_down_then_the_fleet_keeps_its_own_pace(gh: Any) -> None:
    fleet, bare, api, settings = gh
    configure(bare, {"every": "10m"})
    merge(fleet.path, tick=1, allow_empty=True, dispatch=chain(settings, ticks_left=3, workers="2", agents="ada,basil"))
    merge(fleet.path, tick=2, allow_empty=True, dispatch=chain(settings, ticks_left=2, workers="2", agents="ada,basil"))
    merge(fleet.path, tick=3, allow_empty=True, dispatch=chain(settings, ticks_left=1, workers="2", agents="ada,basil"))
    assert [d.inputs for d in api.dispatches] == [
        {"after": "1", "ticks": "2", "workers": "2", "agents": "ada,basil"},
        {"after": "2", "ticks": "1", "workers": "2", "agents": "ada,basil"},
        {"after": "3"},  # the count is done: the fleet's own chain goes on, with its own workers and agents
    ]


def test_without_a_pace_a_chain_by_hand_runs_its_ticks_and_ends(gh: Any) -> None:
    fleet, bare, api, settings = gh
    assert merge(fleet.path, tick=1, allow_empty=True, dispatch=chain(settings, ticks_left=2)).dispatch["dispatched"]
    r = merge(fleet.path, tick=2, allow_empty=True, dispatch=chain(settings, ticks_left=1))
    assert not r.dispatch["dispatched"] and r.dispatch["why"] == ("no run.every: the next tick starts by cron or by "
                                                                  "hand (the ticks asked for are done)")
    assert [d.inputs for d in api.dispatches] == [{"after": "1", "ticks": "1"}]


def test_a_dispatch_github_refuses_leaves_the_tick_published_and_says_what_to_fix(gh: Any) -> None:
    fleet, bare, api, settings = gh
    configure(bare, {"every": "10m"})
    api.fail("POST", r"/dispatches$", 403, body={"message": "Resource not accessible by integration",
                                                 "documentation_url": "https://docs.github.com/rest", "status": "403"},
             headers={})
    r = merge(fleet.path, tick=1, allow_empty=True, dispatch=chain(settings))
    assert r.published and not r.dispatch["dispatched"]
    assert "GitHub refused the dispatch of tick.yml on main: 403 Resource not accessible by integration" in r.dispatch["why"]
    assert "actions: write" in r.dispatch["why"] and api.dispatches == []


def test_merge_dispatch_reads_the_job_environment(gh: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet, bare, api, settings = gh
    configure(bare, {"every": "10m"})
    for k, v in {"GITHUB_API_URL": api.url, "GITHUB_REPOSITORY": "acme/fleet", "GITHUB_TOKEN": TEST_TOKEN,
                 "GITHUB_WORKFLOW_REF": "acme/fleet/.github/workflows/tick.yml@refs/heads/main",
                 "FLEET_GITHUB_WRITE_SPACING": "0"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("FLEET_STOP", raising=False)
    r = CliRunner().invoke(cli, ["merge", "-C", str(fleet.path), "--tick", "1", "--allow-empty", "--dispatch",
                                 "--ticks-left", "2", "--next-agents", "ada", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["dispatch"]["dispatched"] and out["dispatch"]["inputs"] == {"after": "1", "ticks": "1", "agents": "ada"}
    assert [d.inputs for d in api.dispatches] == [{"after": "1", "ticks": "1", "agents": "ada"}]
    bad = CliRunner().invoke(cli, ["plan", "-C", str(fleet.path), "--ticks", "none"])
    assert bad.exit_code == 2 and "--ticks" in bad.output


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_a_chain_never_forks_when_cron_runs_cut_in(gh: Any) -> None:
    """Each dispatched run waits for its tick, starts it, merges it and dispatches the
    next; scheduled runs come at any time. However they interleave, one chain goes on."""
    fleet, bare, api, settings = gh
    configure(bare, {"every": "10m"})
    c = Clock(T0 + 30)
    said: list[str] = []

    def a_run(who: str, mode: str, after: int | None = None) -> bool:
        p = plan(fleet.path, start=True, mode=mode, wait=mode == "dispatched", now=c.now, sleep=c.sleep,
                 say=said.append, by=who, after=after)
        if p["due"]:
            c.t += 120  # the tick's work
            merge(fleet.path, tick=p["tick"], allow_empty=True, dispatch=chain(settings))
        return p["due"]

    assert a_run("cron 1", "schedule")  # cron starts the chain: tick 1
    assert len(api.dispatches) == 1
    assert not a_run("cron 2", "schedule")  # cron again in the same slot: not due, exit 3, no fork
    assert a_run("run 2", "dispatched", 1)  # the dispatched run waits for the next slot, ticks, dispatches
    assert said and said[-1].endswith("waiting 7m30s for it")
    c.t = T0 + 2 * 600 + 5  # a cron run at the start of the next slot gets there first: it ticks, and dispatches
    assert a_run("cron 3", "schedule")
    assert not a_run("run 3", "dispatched", 2)  # the run tick 2 dispatched finds tick 3 taken: exit 3
    assert a_run("run 4", "dispatched", 3)  # the one cron's tick dispatched goes on
    ticks = [d.inputs["after"] for d in api.dispatches]
    assert ticks == ["1", "2", "3", "4"]  # one next run per published tick
    assert json.loads(Git(bare).show("refs/heads/main", "state/fleet.json"))["tick"] == 4


def test_a_github_that_cannot_be_reached_leaves_the_tick_published_and_says_so(gh: Any) -> None:
    fleet, bare, api, settings = gh
    configure(bare, {"every": "10m"})
    nowhere = GitHubSettings("http://127.0.0.1:9", "acme/fleet", TEST_TOKEN, seconds_between_writes=0)
    r = merge(fleet.path, tick=1, allow_empty=True, dispatch=chain(nowhere))
    assert r.published and not r.dispatch["dispatched"]
    assert r.dispatch["why"].startswith("GitHub refused the dispatch of tick.yml on main: it could not be reached (")


def test_a_pace_longer_than_a_job_may_wait_is_chained_by_relays(gh: Any) -> None:
    """A pace of a day: the merge dispatches the next run all the same; that run waits
    all a job may, then records a relay and its relay job (`fleet dispatch`) starts the
    next run, which waits in turn, until the tick is due. A run GitHub started twice
    relays once; the stop switch ends the chain at a relay too."""
    fleet, bare, api, settings = gh
    configure(bare, {"every": "1d"})
    at = [float(T0 + 60)]

    def now() -> float:
        return at[0]

    def sleep(s: float) -> None:
        at[0] += s

    assert plan(fleet.path, start=True, now=now, by="run 1")["due"]  # tick 1 starts a minute into its day
    r = merge(fleet.path, tick=1, allow_empty=True, dispatch=chain(settings))
    assert r.dispatch["dispatched"] and "further away than a job may wait (5h50m)" in r.dispatch["why"]
    assert [d.inputs for d in api.dispatches] == [{"after": "1"}]
    start = Git(bare).rev_parse("refs/heads/main")

    p = plan(fleet.path, start=True, mode="dispatched", wait=True, after=1, now=now, sleep=sleep, by="run 2")
    assert not p["due"] and p["waited_seconds"] == MAX_WAIT and p["relay"] == {"after": 1, "relay": 1}
    assert "so this run passes the chain on (relay 1 after tick 1)" in p["why"]
    twin_at = [float(T0 + 60)]  # GitHub started run 2 twice: its twin waited beside it
    twin = plan(fleet.path, start=True, mode="dispatched", wait=True, after=1, now=lambda: twin_at[0],
                sleep=lambda s: twin_at.__setitem__(0, twin_at[0] + s), by="run 2b")
    assert twin["relay"] is None and "another run of this chain passed the chain on" in twin["why"]
    assert Git(bare).rev_parse("refs/heads/main") == start  # waiting and relaying write nothing on main
    out = CliRunner().invoke(cli, ["dispatch", "-C", str(fleet.path), "--after", "1", "--relay", "1", "--json"],
                             env=job_env(api))
    assert out.exit_code == 0, out.output
    assert [d.inputs for d in api.dispatches] == [{"after": "1"}, {"after": "1", "relay": "1"}]
    # the relayed run waits in turn; the next relay is its own, once
    p = plan(fleet.path, start=True, mode="dispatched", wait=True, after=1, relay=1, now=now, sleep=sleep, by="run 3")
    assert p["relay"] == {"after": 1, "relay": 2}
    stopped = CliRunner().invoke(cli, ["dispatch", "-C", str(fleet.path), "--after", "1", "--relay", "2"],
                                 env={**job_env(api), "FLEET_STOP": "1"})
    assert stopped.exit_code == 3 and "the stop switch is on" in stopped.output
    assert len(api.dispatches) == 2
    # the fourth run finds its tick due within what a job may wait, and starts it
    p = plan(fleet.path, start=True, mode="dispatched", wait=True, after=1, relay=2, now=now, sleep=sleep, by="run 4")
    assert p["due"] and p["tick"] == 2 and p["relay"] is None and p["start"]["by"] == "run 4"
    assert now() >= (T0 // 86400 + 1) * 86400  # not before the next day's slot
