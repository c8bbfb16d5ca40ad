"""Agent turns on the real Anthropic SDK against a local Messages API.

The server (tests/servers/anthropic_api.py) speaks the wire format of
``POST /v1/messages``; nothing here mocks the SDK. Turns run two ways: in
process through fleet's AnthropicProvider and ``run_turns`` (precise, fast),
and as a user runs them, ``fleet work`` / ``fleet run --provider anthropic``
subprocesses with ``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_API_KEY`` pointing at
the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.servers` from any working directory

from fleet import canonical  # noqa: E402
from fleet import world as world_mod  # noqa: E402
from fleet.commands.init import init  # noqa: E402
from fleet.config import Price  # noqa: E402
from fleet.git import Git  # noqa: E402
from fleet.providers.anthropic import AnthropicProvider  # noqa: E402
from fleet.state import MemorySnapshot  # noqa: E402
from fleet.streams import run_turns  # noqa: E402
from tests.servers.anthropic_api import (  # noqa: E402
    AnthropicAPI,
    api_error,
    key_echo,
    overloaded,
    rate_limited,
    reply,
    slow,
    text,
    tool_use,
)

KEY = "sk-ant-test-" + "k" * 24
AGENTS = ["ada", "basil", "cleo", "dara", "eli", "fen"]
MODEL = "claude-test-1"
PRICE = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


@pytest.fixture
def api() -> Iterator[AnthropicAPI]:
    with AnthropicAPI() as server:
        yield server
        assert server.errors == [], server.errors  # the test server itself never failed


# -- helpers ---------------------------------------------------------------

def merge_into(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge_into(base[k], v)
        else:
            base[k] = v
    return base


def fast_config(**changes: Any) -> dict[str, Any]:
    """Config changes every test wants: a priced model, short retries."""
    return merge_into({"run": {"model": MODEL, "max_retries": 2, "turn_timeout_seconds": 20},
                       "models": {MODEL: dict(PRICE)}}, changes)


def new_repo(tmp_path: Path, config: dict[str, Any] | None = None) -> Path:
    """A fresh fleet repository (``fleet init``), its config changed by a person's commit."""
    repo = tmp_path / "x"
    init(repo)
    if config:
        path = repo / "state" / "config.json"
        path.write_bytes(canonical.dumps(merge_into(json.loads(path.read_bytes()), config)))
        Git(repo).run("-c", "user.name=Person", "-c", "user.email=person@example.com", "-c", "commit.gpgsign=false",
                      "commit", "--quiet", "--no-verify", "-am", "config for this test")
    return repo


def snapshot(tmp_path: Path, **changes: Any) -> MemorySnapshot:
    repo = new_repo(tmp_path, fast_config(**changes))
    files = {str(p.relative_to(repo)): p.read_bytes()
             for sub in ("state", "schemas") for p in (repo / sub).rglob("*") if p.is_file()}
    return MemorySnapshot(files)


def turns(api: AnthropicAPI, snap: MemorySnapshot, agents: list[str] | None = None, key: str = KEY,
          **kw: Any) -> dict[str, dict[str, Any]]:
    """One tick's turns through fleet's AnthropicProvider; agent -> delta body."""
    provider = AnthropicProvider(snap.config, api_key=key, base_url=api.url)

    async def go() -> list[dict[str, Any]]:
        try:
            return await run_turns(provider, snap, agents or AGENTS, tick=snap.tick + 1, worker="w1", **kw)
        finally:
            await provider.aclose()

    bodies = asyncio.run(go())
    assert len(bodies) == len(agents or AGENTS)
    return {b["agent"]: b for b in bodies}


def ops_of(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(o["op"], o["collection"], o["id"]) for o in body["ops"]]


def env(api: AnthropicAPI | None, tmp_path: Path, key: str | None = KEY) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("ANTHROPIC_") and k not in ("GITHUB_TOKEN", "GH_TOKEN")}
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    e["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    if api is not None:
        e["ANTHROPIC_BASE_URL"] = api.url
    if key is not None:
        e["ANTHROPIC_API_KEY"] = key
    return e


def fleet(repo: Path, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "fleet", *args], cwd=repo, capture_output=True, text=True,
                       env=env, timeout=timeout)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    return p


def origin(repo: Path) -> Git:
    return Git(repo / ".git" / "fleet" / "origin.git")


def ledger(git: Git, rev: str = "refs/heads/main") -> list[dict[str, Any]]:
    """Every delta applied on main, from the ledger files."""
    out = []
    for path in git.text("ls-tree", "-r", "--name-only", rev, "state/ledger").split():
        data = git.show(rev, path) or b""
        out += [json.loads(line) for line in data.splitlines() if line.strip()]
    return out


def by_tick(requests: list[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for s in requests:
        tick = next(int(w.rstrip(".")) for w in s.system[0]["text"].split("It is tick ", 1)[1].split()[:1])
        out.setdefault(tick, []).append(s)
    return out


# -- tool calls become delta ops -----------------------------------------

def test_tool_use_replies_become_delta_ops(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    deltas = turns(api, snap)
    seen = api.requests
    assert sorted(s.agent for s in seen) == AGENTS  # one call per agent, the agent in metadata.user_id
    for s in seen:
        b = s.body
        assert s.status == 200 and s.path == "/v1/messages" and s.headers["anthropic-version"]
        assert b["model"] == MODEL and isinstance(b["max_tokens"], int) and not b.get("stream")
        w = world_mod.load(snap.config, snap.read)  # each agent is offered its own tools, and do_nothing
        assert [t["name"] for t in b["tools"]] == [t["name"] for t in w.definitions(w.tools_of(snap.config, s.agent))]
        assert b["messages"][0]["role"] == "user"
        call = s.response["content"][0]
        d = deltas[s.agent]
        assert "error" not in d["meta"] and "rejected" not in d["meta"] and "noop" not in d["meta"]
        assert d["meta"]["provider"] == "anthropic" and d["meta"]["model"] == MODEL
        first = d["ops"][0]
        if call["name"] == "post":
            assert (first["op"], first["collection"]) == ("create", "posts")
            assert first["doc"]["author"] == s.agent and first["doc"]["channel"] == call["input"]["channel"]
            assert first["doc"]["title"] == call["input"]["title"] and first["doc"]["body"] == call["input"]["body"]
        else:
            assert call["name"] == "comment"
            assert (first["op"], first["collection"]) == ("create", "comments")
            assert first["doc"]["post"] == call["input"]["post"] and first["doc"]["author"] == s.agent


def test_several_tool_calls_in_one_turn_become_ops_in_order(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    api.script(reply(text("Three things today."),
                     tool_use("post", {"channel": "tools", "title": "Tests first", "body": "Always."}),
                     tool_use("comment", {"post": "cleo-1", "body": "And 1975 had no CI."}),
                     tool_use("react", {"post": "cleo-1", "kind": "insight"}),
                     tool_use("remember", {"text": "cleo likes history"})), agent="ada")
    d = turns(api, snap)["ada"]
    assert ops_of(d) == [
        ("create", "posts", "ada-t1-1"), ("incr", "channels", "tools"), ("incr", "agents", "ada"),
        ("create", "comments", "ada-t1-2"), ("incr", "posts", "cleo-1"),
        ("create", "reactions", "ada-cleo-1-insight"), ("incr", "posts", "cleo-1"), ("incr", "agents", "cleo"),
        ("append", "agents", "ada"),
    ]
    assert "rejected" not in d["meta"] and "noop" not in d["meta"] and "error" not in d["meta"]


def test_text_only_answer_and_do_nothing_are_explicit_noops(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    api.script(reply(text("I will sit this tick out.")), agent="ada")
    api.script(reply(tool_use("do_nothing", {"reason": "quiet day"})), agent="basil")
    deltas = turns(api, snap)
    for agent, reason in (("ada", "answered without a tool call"), ("basil", "quiet day")):
        d = deltas[agent]
        assert d["ops"] == [] and d["meta"]["noop"] == reason
        assert "error" not in d["meta"] and d["meta"]["usage"]["output_tokens"] > 0
    assert all(deltas[a]["ops"] for a in AGENTS[2:])


# -- retries, errors and timeouts ------------------------------------------

def test_429_with_retry_after_is_retried_after_that_long(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    api.script(rate_limited(retry_after=1), agent="ada")
    deltas = turns(api, snap)
    tries = api.requests_for("ada")
    assert [s.status for s in tries] == [429, 200]
    assert tries[0].response["error"]["type"] == "rate_limit_error"
    assert tries[1].arrival - tries[0].answered >= 1.0  # the SDK's own backoff would be <= 0.5 s
    assert tries[1].attempt == 1
    assert deltas["ada"]["ops"] and "error" not in deltas["ada"]["meta"]


def test_529_overloaded_is_retried(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    api.script(overloaded(), overloaded(retry_after=1), agent="ada")
    deltas = turns(api, snap)
    tries = api.requests_for("ada")
    assert [s.status for s in tries] == [529, 529, 200]
    assert tries[0].response["error"]["type"] == "overloaded_error"
    assert tries[2].arrival - tries[1].answered >= 1.0
    assert deltas["ada"]["ops"] and "error" not in deltas["ada"]["meta"]


def test_500_is_retried_and_then_succeeds(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    api.script(api_error(), agent="ada")
    deltas = turns(api, snap)
    assert [s.status for s in api.requests_for("ada")] == [500, 200]
    assert deltas["ada"]["ops"] and "error" not in deltas["ada"]["meta"]


def test_500_that_keeps_failing_is_an_empty_delta_for_that_agent_only(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path, run={"max_retries": 1})
    api.rule(api_error(), agent="basil")
    deltas = turns(api, snap)
    assert [s.status for s in api.requests_for("basil")] == [500, 500]  # retried, then given up
    d = deltas["basil"]
    assert d["ops"] == [] and "500" in d["meta"]["error"] and "api_error" in d["meta"]["error"]
    assert "usage" not in d["meta"]
    for a in AGENTS:
        if a != "basil":
            assert deltas[a]["ops"] and "error" not in deltas[a]["meta"], a


def test_a_call_slower_than_the_timeout_is_an_error_for_that_agent_only(api: AnthropicAPI, tmp_path: Path) -> None:
    """Nobody waits for the slow call: the turns end, cleo's with the client's
    timeout error, before the server has answered any of cleo's requests."""
    snap = snapshot(tmp_path, run={"turn_timeout_seconds": 0.5, "max_retries": 1})
    # far beyond every limit a turn has (the SDK's 0.5 s timeout, and the turn's own
    # limit of timeout x attempts + 60 s): if anything waited for it, the order below breaks
    api.rule(slow(600), agent="cleo")
    deltas = turns(api, snap)
    cleo = api.requests_for("cleo")
    assert len(cleo) == 2  # the SDK retries a timeout once (max_retries 1)
    assert all(s.answered is None for s in cleo)  # the turns were over before any answer to cleo was sent
    others = [s for s in api.requests if s.agent != "cleo"]
    assert sorted({s.agent for s in others}) == sorted(set(AGENTS) - {"cleo"})
    assert all(s.answered is not None and s.status == 200 for s in others)
    d = deltas["cleo"]
    assert d["ops"] == [] and "timed out" in d["meta"]["error"].lower()
    for a in AGENTS:
        if a != "cleo":
            assert deltas[a]["ops"] and "error" not in deltas[a]["meta"], a


# -- untrusted tool input --------------------------------------------------

def test_tool_input_that_fails_its_schema_is_rejected_and_never_applied(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    bad = [tool_use("post", {"channel": "tools", "body": "no title"}),
           tool_use("comment", {"post": "ada-1", "body": ""}),
           tool_use("react", {"post": "ada-1", "kind": "love"}),
           tool_use("post", {"channel": "../../etc", "title": "t", "body": "b"}),
           tool_use("remember", "not an object"),
           tool_use("launch_missiles", {"target": "main"})]
    api.script(reply(*bad, tool_use("remember", {"text": "only this one is valid"})), agent="ada")
    api.script(reply(*bad[:3]), agent="basil")
    deltas = turns(api, snap)
    ada = deltas["ada"]
    assert ops_of(ada) == [("append", "agents", "ada")]
    assert ada["ops"][0]["item"]["text"] == "only this one is valid"
    rejected = ada["meta"]["rejected"]
    assert [r["tool"] for r in rejected] == ["post", "comment", "react", "post", "remember", "launch_missiles"]
    assert all("schema" in r["reason"] for r in rejected[:5]), rejected
    assert "unknown tool" in rejected[5]["reason"]
    assert rejected[0]["input"] == {"channel": "tools", "body": "no title"}  # recorded as the model sent it
    basil = deltas["basil"]
    assert basil["ops"] == [] and len(basil["meta"]["rejected"]) == 3 and basil["meta"]["noop"] == "no valid action"


def test_tool_calls_that_act_for_another_agent_are_rejected(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path, agents={"dara": {"actions": ["remember", "do_nothing"]}})
    api.script(reply(tool_use("post", {"channel": "general", "title": "hi", "body": "b", "agent": "basil"}),
                     tool_use("remember", {"text": "I am basil now", "as": "basil"}),
                     tool_use("update_bio", {"bio": "hacked", "agent": "basil"}),
                     tool_use("follow", {"agent": "nobody"}),
                     tool_use("follow", {"agent": "ada"})), agent="ada")
    api.script(reply(tool_use("post", {"channel": "general", "title": "not allowed", "body": "b"})), agent="dara")
    deltas = turns(api, snap)
    ada = deltas["ada"]
    assert ada["ops"] == [] and ada["meta"]["noop"] == "no valid action"
    reasons = [r["reason"] for r in ada["meta"]["rejected"]]
    assert len(reasons) == 5
    assert all("schema" in r for r in reasons[:3]) and "nobody" in reasons[3] and "'ada'" in reasons[4]
    dara = deltas["dara"]
    assert dara["ops"] == [] and "not among this agent's actions" in dara["meta"]["rejected"][0]["reason"]
    for d in deltas.values():  # nobody's delta touches what only another agent may change
        for o in d["ops"]:
            if o["collection"] == "agents" and o["op"] != "incr":
                assert o["id"] == d["agent"], o


# -- usage, cost and the cached prefix -----------------------------------

def test_usage_and_cost_are_recorded_in_every_delta(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    deltas = turns(api, snap, concurrency=1)  # one at a time: the first writes the cache, the rest read it
    price = Price(**PRICE)
    writes = reads = 0
    for s in api.requests:
        u = deltas[s.agent]["meta"]["usage"]
        assert {k: u[k] for k in USAGE_KEYS} == {k: s.usage[k] for k in USAGE_KEYS}
        assert u["cost_usd"] == pytest.approx(price.cost(u), abs=1e-6) and u["cost_usd"] > 0
        writes += u["cache_creation_input_tokens"] > 0
        reads += u["cache_read_input_tokens"] > 0
    assert (writes, reads) == (1, 5)


def test_shared_part_of_the_system_prompt_comes_first_cached_and_identical(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    deltas = turns(api, snap, concurrency=1)
    seen = api.requests
    first = [json.dumps(s.body["system"][0], sort_keys=True) for s in seen]
    assert len(set(first)) == 1  # byte-identical for every agent of the tick
    assert seen[0].body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert len({json.dumps(s.body["tools"]) for s in seen}) == 1  # tools sit before the breakpoint too
    for s in seen:
        assert s.agent in s.body["system"][-1]["text"] and all("cache_control" not in b for b in s.system[1:])
        assert s.agent not in s.body["system"][0]["text"].split("Agents:")[0]  # not about any one agent
    for s in seen[1:]:  # from the second agent on, most of the prompt is read from the cache
        u = deltas[s.agent]["meta"]["usage"]
        assert u["cache_read_input_tokens"] / (u["cache_read_input_tokens"] + u["input_tokens"]) >= 0.7


def test_a_tick_pays_for_its_shared_prefix_once(tmp_path: Path) -> None:
    with AnthropicAPI(latency=0.3) as server:  # as the real API: an entry is readable once its writer answered
        turns(server, snapshot(tmp_path))
        writers = [s.agent for s in server.requests if s.usage["cache_creation_input_tokens"] > 0]
    assert len(writers) == 1, writers


def test_cost_uses_the_configured_price_when_the_api_names_a_dated_model(tmp_path: Path) -> None:
    odd = {"input": 100.0, "output": 100.0, "cache_read": 100.0, "cache_write": 100.0}
    with AnthropicAPI(model_ids={MODEL: MODEL + "-20990101"}) as server:
        roomy = {"agent": {"tokens": 10**9, "usd": 1000.0}, "tick": {"usd": 10.0**6}}  # at $100/Mtok
        d = turns(server, snapshot(tmp_path, models={MODEL: odd}, budgets=roomy), agents=["ada"])["ada"]
    assert d["meta"]["usage"]["cost_usd"] == pytest.approx(Price(**odd).cost(d["meta"]["usage"]), abs=1e-6)


def test_an_error_delta_names_the_agents_model(api: AnthropicAPI, tmp_path: Path) -> None:
    api.rule(api_error(), agent="ada")
    snap = snapshot(tmp_path, run={"max_retries": 0}, agents={"ada": {"model": "claude-other"}})
    d = turns(api, snap, agents=["ada"])["ada"]
    assert [s.body["model"] for s in api.requests] == ["claude-other"]
    assert d["meta"]["error"] and d["meta"]["model"] == "claude-other"


# -- budgets --------------------------------------------------------------

def test_a_tiny_agent_budget_stops_the_turn_before_it_starts(api: AnthropicAPI, tmp_path: Path) -> None:
    snap = snapshot(tmp_path, agents={"ada": {"budget": {"tokens": 50}}, "basil": {"budget": {"usd": 0.000001}}})
    deltas = turns(api, snap)
    assert sorted(s.agent for s in api.requests) == AGENTS[2:]  # no call was made for them
    for agent, what in (("ada", "50 tokens"), ("basil", "$1e-06")):
        d = deltas[agent]
        assert d["ops"] == [] and d["meta"]["error"].startswith("not started: agent budget")
        assert what in d["meta"]["error"]
    assert all(deltas[a]["ops"] for a in AGENTS[2:])  # finished work is kept


def test_a_tick_dollar_budget_stops_new_turns_once_spent(api: AnthropicAPI, tmp_path: Path) -> None:
    budget = 0.012
    snap = snapshot(tmp_path, run={"max_tokens": 200}, budgets={"tick": {"usd": budget}})
    deltas = turns(api, snap, concurrency=1)
    order = [deltas[a] for a in AGENTS]
    done = [d for d in order if "error" not in d["meta"]]
    stopped = [d for d in order if "error" in d["meta"]]
    assert done and stopped, [d["meta"] for d in order]
    assert order == done + stopped  # once the budget is spent, no later turn starts
    assert sum(d["meta"]["usage"]["cost_usd"] for d in done) <= budget
    assert all(d["ops"] for d in done)  # earlier deltas stand
    for d in stopped:
        assert d["ops"] == [] and "not started: the tick's dollar budget" in d["meta"]["error"]
    assert sorted(s.agent for s in api.requests) == sorted(d["agent"] for d in done)


# -- as a user runs it -----------------------------------------------------

def test_fleet_work_turns_tool_calls_into_pushed_deltas(api: AnthropicAPI, tmp_path: Path) -> None:
    repo = new_repo(tmp_path, fast_config())
    api.script(reply(tool_use("post", {"channel": "ideas", "title": "Deltas", "body": "Small files."}),
                     tool_use("comment", {"post": "cleo-1", "body": "Agreed."}),
                     tool_use("post", {"channel": "ideas", "body": "no title"}),
                     tool_use("update_bio", {"bio": "mine now", "agent": "basil"})), agent="ada")
    api.script(reply(text("Nothing from me.")), agent="basil")
    p = fleet(repo, "work", "--worker", "1", "--workers", "1", "--provider", "anthropic", "--json",
              env=env(api, tmp_path))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["deltas"] == 6 and report["errors"] == 0 and report["pushed"]
    assert report["usage"]["input_tokens"] == sum(s.usage["input_tokens"] for s in api.requests)
    git = Git(repo)
    files = git.text("ls-tree", "-r", "--name-only", report["branch"], "deltas").split()
    deltas = {d["agent"]: d for d in (json.loads(git.show(report["branch"], f) or b"") for f in files)}
    assert sorted(deltas) == AGENTS
    assert ops_of(deltas["ada"])[:4] == [("create", "posts", "ada-t1-1"), ("incr", "channels", "ideas"),
                                         ("incr", "agents", "ada"), ("create", "comments", "ada-t1-2")]
    assert [r["tool"] for r in deltas["ada"]["meta"]["rejected"]] == ["post", "update_bio"]
    assert deltas["basil"]["ops"] == [] and deltas["basil"]["meta"]["noop"] == "answered without a tool call"
    m = fleet(repo, "merge", "--json", env=env(None, tmp_path, key=None))
    assert m.returncode == 0, m.stderr
    merged = json.loads(m.stdout)
    assert (merged["merged"], merged["noop"]) == (6, 1)  # basil's turn changed nothing, and is counted so
    assert json.loads(git.show("refs/heads/main", "state/posts/ada-t1-1.json") or b"")["title"] == "Deltas"
    assert json.loads(git.show("refs/heads/main", "state/agents/basil.json") or b"").get("bio") != "mine now"
    assert not any("no title" in (git.show("refs/heads/main", f) or b"").decode()
                   for f in git.text("ls-tree", "-r", "--name-only", "refs/heads/main", "state/posts").split())


def test_fleet_run_with_anthropic_records_usage_in_status(api: AnthropicAPI, tmp_path: Path) -> None:
    repo = new_repo(tmp_path, fast_config(agents={"ada": {"budget": {"tokens": 20}}}))
    p = fleet(repo, "run", "--provider", "anthropic", "--ticks", "2", "--workers", "2", "--json",
              env=env(api, tmp_path))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["provider"] == "anthropic" and report["merged"] == 12
    ticks = by_tick(api.requests)
    assert sorted(ticks) == [1, 2]
    for t, seen in ticks.items():
        assert sorted(s.agent for s in seen) == AGENTS[1:]  # ada's budget stopped her turns before a call
        assert len({json.dumps(s.body["system"][0], sort_keys=True) for s in seen}) == 1  # same prefix on both workers
    deltas = ledger(origin(repo))
    assert len(deltas) == 12
    for d in deltas:
        if d["agent"] == "ada":
            assert d["ops"] == [] and d["meta"]["error"].startswith("not started: agent budget")
        else:
            assert d["meta"]["provider"] == "anthropic" and d["meta"]["model"] == MODEL
            assert set(USAGE_KEYS) | {"cost_usd"} <= set(d["meta"]["usage"])
    s = fleet(repo, "status", "--json", env=env(None, tmp_path, key=None))
    status = json.loads(s.stdout)
    total = {k: sum(x.usage[k] for x in api.requests) for k in USAGE_KEYS}
    last = {k: sum(x.usage[k] for x in ticks[2]) for k in USAGE_KEYS}
    assert {k: status["totals"]["usage"][k] for k in USAGE_KEYS} == total
    assert {k: status["last"]["usage"][k] for k in USAGE_KEYS} == last
    assert total["cache_read_input_tokens"] > 0 and total["cache_creation_input_tokens"] > 0
    cost = sum(d["meta"].get("usage", {}).get("cost_usd", 0) for d in deltas)
    assert status["totals"]["usage"]["cost_usd"] == pytest.approx(cost, abs=1e-5) and cost > 0
    assert 0 < status["last"]["usage"]["cost_usd"] < status["totals"]["usage"]["cost_usd"]


def test_auto_runs_anthropic_when_a_key_is_set_and_says_so(api: AnthropicAPI, tmp_path: Path) -> None:
    """The shipped config says run.provider auto: setting the key is enough to run Claude."""
    repo = new_repo(tmp_path, fast_config())
    assert json.loads((repo / "state" / "config.json").read_text())["run"]["provider"] == "auto"
    p = fleet(repo, "run", "--ticks", "1", "--workers", "2", "--json", env=env(api, tmp_path))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["provider"] == "anthropic" and report["models"] == [MODEL], report
    assert "provider auto: ANTHROPIC_API_KEY is set, so the anthropic provider runs" in p.stderr
    assert sorted(s.agent for s in api.requests) == AGENTS
    deltas = ledger(origin(repo))
    assert len(deltas) == 6 and {(d["meta"]["provider"], d["meta"]["model"]) for d in deltas} == {("anthropic", MODEL)}
    text = fleet(repo, "run", "--ticks", "1", "--workers", "2", env=env(api, tmp_path))
    assert text.returncode == 0, text.stderr
    assert f"provider anthropic, model {MODEL}" in text.stdout
    for out in (p.stdout + p.stderr, text.stdout + text.stderr):
        assert KEY not in out


def test_auto_without_a_key_runs_offline_and_says_so(api: AnthropicAPI, tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    p = fleet(repo, "run", "--ticks", "1", "--workers", "2", env=env(api, tmp_path, key=None))
    assert p.returncode == 0, p.stderr
    assert "provider offline, model offline-1" in p.stdout
    assert "provider auto: no ANTHROPIC_API_KEY, so the offline provider runs" in p.stdout
    assert api.requests == []
    deltas = ledger(origin(repo))
    assert len(deltas) == 6 and {d["meta"]["provider"] for d in deltas} == {"offline"}


def test_an_explicit_provider_wins_over_auto(api: AnthropicAPI, tmp_path: Path) -> None:
    # the flag: offline although a key is set
    repo = new_repo(tmp_path, fast_config())
    p = fleet(repo, "run", "--provider", "offline", "--ticks", "1", "--workers", "2", "--json", env=env(api, tmp_path))
    assert p.returncode == 0, p.stderr
    assert (json.loads(p.stdout)["provider"], json.loads(p.stdout)["models"]) == ("offline", ["offline-1"])
    assert api.requests == []
    # the config: offline although a key is set
    other = new_repo(tmp_path / "cfg", fast_config(run={"provider": "offline"}))
    p = fleet(other, "work", "--worker", "1", "--workers", "1", "--json", env=env(api, tmp_path))
    assert p.returncode == 0, p.stderr
    assert (json.loads(p.stdout)["provider"], json.loads(p.stdout)["models"]) == ("offline", ["offline-1"])
    assert api.requests == []
    # anthropic asked for without a key: a usage error naming the setting, nothing run on another provider
    before = origin(repo).rev_parse("refs/heads/main")
    for args in (("run", "--provider", "anthropic"), ("work", "--worker", "1", "--workers", "1", "--provider", "anthropic")):
        p = fleet(repo, *args, env=env(api, tmp_path, key=None))
        assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
        [line] = p.stderr.splitlines()
        assert "--provider says anthropic, which needs ANTHROPIC_API_KEY" in line
    assert origin(repo).rev_parse("refs/heads/main") == before and origin(repo).refs("refs/heads/fleet/t") == []


def test_fleet_work_and_the_job_summaries_name_the_provider_and_model(api: AnthropicAPI, tmp_path: Path) -> None:
    repo = new_repo(tmp_path, fast_config())
    summary_md = tmp_path / "summary.md"
    e = dict(env(api, tmp_path), GITHUB_STEP_SUMMARY=str(summary_md))
    p = fleet(repo, "work", "--worker", "1", "--workers", "1", "--json", env=e)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["provider"] == "anthropic" and report["models"] == [MODEL]
    work_table = summary_md.read_text()
    assert "| provider | model | agents |" in work_table and f"| anthropic | {MODEL} | 6 |" in work_table
    m = fleet(repo, "merge", "--json", env=dict(env(None, tmp_path, key=None), GITHUB_STEP_SUMMARY=str(summary_md)))
    assert m.returncode == 0, m.stderr
    assert json.loads(m.stdout)["models"] == [f"anthropic {MODEL}"]
    assert "| models | agents |" in summary_md.read_text() and f"| anthropic {MODEL} | 6 |" in summary_md.read_text()
    t = fleet(repo, "work", "--worker", "1", "--workers", "1", env=e)  # tick 2, as text
    assert t.returncode == 0, t.stderr
    assert f"provider anthropic, model {MODEL}" in t.stdout
    for out in (p.stdout + p.stderr, m.stdout + m.stderr, t.stdout + t.stderr, summary_md.read_text()):
        assert KEY not in out


def test_the_api_key_never_leaves_the_process(api: AnthropicAPI, tmp_path: Path) -> None:
    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    repo = new_repo(tmp_path, fast_config(run={"max_retries": 1}))
    api.rule(key_echo(500), agent="ada")  # retried, then an error delta
    api.rule(key_echo(401, "authentication_error"), agent="basil")  # not retried
    api.rule(key_echo(429, "rate_limit_error"), agent="cleo")
    e = env(api, tmp_path, key=canary)
    outputs = []
    for args in (("run", "--provider", "anthropic", "--ticks", "2", "--workers", "2"),
                 ("status",), ("status", "--json"), ("log",), ("log", "--json"), ("log", "--agent", "ada")):
        p = fleet(repo, *args, env=e)
        assert p.returncode == 0, p.stderr
        outputs.append(p.stdout + p.stderr)
    assert api.saw_key(canary)  # the key was really used...
    echoed = [s for s in api.requests if s.agent in ("ada", "basil", "cleo")]
    assert echoed and all(s.status in (401, 429, 500) and s.response["error"]["message"].endswith("[redacted]")
                          for s in echoed)  # ...and the server sent it back in its error messages
    deltas = ledger(origin(repo))
    assert len(deltas) == 12
    errors = [d for d in deltas if d["agent"] in ("ada", "basil", "cleo")]
    assert all(d["ops"] == [] and "[REDACTED]" in d["meta"]["error"] for d in errors), [d["meta"] for d in errors]
    needle = canary.encode()
    for out in outputs:
        assert canary not in out
    for d in deltas:
        assert canary not in json.dumps(d)
    fleet_dir = repo / ".git" / "fleet"
    git_dirs = [repo / ".git", *fleet_dir.glob("*.git"), *(fleet_dir / "workers").glob("*.git")]
    assert len(git_dirs) >= 4
    for g in git_dirs:
        objects = subprocess.run(["git", "--git-dir", str(g), "cat-file", "--batch-all-objects", "--batch"],
                                 capture_output=True, check=True).stdout
        assert objects and needle not in objects, g
    caches = [tmp_path / "cache", Path.home() / ".cache" / "fleet"]
    for root in (repo, *caches):
        for f in root.rglob("*") if root.exists() else ():
            if f.is_file() and not f.is_symlink():
                assert needle not in f.read_bytes(), f


def test_sigterm_mid_tick_publishes_finished_turns_and_errors_for_the_rest(tmp_path: Path) -> None:
    """A runner that stops the worker (SIGTERM) gets what finished, an explicit
    empty delta with the error for every other agent, never a partial one,
    and a worker that cleaned up after itself."""
    import signal as _signal
    import time as _time

    repo = new_repo(tmp_path, fast_config())
    bare = tmp_path / "o.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    with AnthropicAPI(latency=lambda s: 0.05 if s.agent == "ada" else 60.0) as api:
        proc = subprocess.Popen([sys.executable, "-m", "fleet", "work", "--worker", "1", "--workers", "1",
                                 "--remote", str(bare), "--provider", "anthropic", "--json"],
                                cwd=repo, env=env(api, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        api.wait_for(len(AGENTS), timeout=30)  # ada answered; the five others are in flight
        _time.sleep(0.2)
        proc.send_signal(_signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in out + err
    report = json.loads(out)
    assert report["pushed"] and report["deltas"] == len(AGENTS) and report["errors"] == len(AGENTS) - 1
    head = Git(bare).rev_parse("refs/heads/fleet/t1/w1")
    files = Git(bare).ls_tree(head, "deltas/")
    bodies = [json.loads(b) for b in Git(bare).cat_blobs(list(files.values())).values()]
    by_agent = {b["agent"]: b for b in bodies}
    assert by_agent["ada"]["ops"] and not by_agent["ada"]["meta"].get("error")
    for agent in AGENTS:
        if agent != "ada":
            assert by_agent[agent]["ops"] == [] and "SIGTERM" in by_agent[agent]["meta"]["error"]
    caches = repo / ".git" / "fleet"
    assert not any((caches / "tmp").iterdir())
    assert Git(caches / "workers" / "w1.git").text("worktree", "list").count("\n") == 0


def test_fleet_run_merges_what_arrived_by_the_deadline(tmp_path: Path) -> None:
    """The clock: a tick waits for its workers until the deadline, then the
    late ones are stopped (they publish what finished, the rest as errors) and
    the merge goes on; the next tick starts from it.

    Proven by the order of events, not by a stopwatch: the slow agents' calls
    are never answered (their latency is far beyond the deadline), so the tick
    ended while they were in flight; the deadline itself is generous, so that
    workers on a busy machine still have the time to start and finish the
    fast turns."""
    repo = new_repo(tmp_path, fast_config(run={"turn_timeout_seconds": 3600}))  # only the deadline stops a turn
    slow = {"basil", "dara"}
    deadline = 45  # generous: a worker on a busy machine still starts and finishes its fast turns by then
    with AnthropicAPI(latency=lambda s: 3600.0 if s.agent in slow else 0.0) as api:
        p = fleet(repo, "run", "--ticks", "1", "--workers", "2", "--provider", "anthropic", "--deadline",
                  str(deadline), "--json", env=env(api, tmp_path), timeout=deadline + 300)
        requests = list(api.requests)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["tick"] == 1 and report["merged"] == len(AGENTS), (report, p.stderr)
    assert report["ticks"][0]["delivered"] == 2  # both workers were stopped at the deadline and published
    late = [s for s in requests if s.agent in slow]
    assert late and all(s.answered is None for s in late)  # the tick did not wait for them
    answered = [s for s in requests if s.answered is not None]
    assert answered and all(s.agent not in slow and s.status == 200 for s in answered)
    deltas = {d["agent"]: d for d in ledger(origin(repo))}
    for agent in AGENTS:
        if agent in slow:
            assert deltas[agent]["ops"] == [] and deltas[agent]["meta"]["error"]
    # what arrived by the deadline was merged: every answered turn, and nothing else, made ops
    assert all("error" not in deltas[s.agent]["meta"] for s in answered)
    assert {a for a in AGENTS if deltas[a]["ops"]} <= {s.agent for s in answered}
    assert any(deltas[a]["ops"] for a in AGENTS if a not in slow)
    assert not any((repo / ".git" / "fleet" / "tmp").iterdir())


def test_a_run_whose_every_turn_failed_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    """A wrong key: every call answers 401. Each turn is an empty delta with its
    error (the ledger keeps them), and the run says the turns failed, names the
    error, and exits 1; `fleet status` puts it under "needs you". The key never
    appears."""
    wrong = "sk-ant-test-" + "w" * 24
    with AnthropicAPI(api_key=KEY) as api:
        repo = new_repo(tmp_path, fast_config())
        p = fleet(repo, "run", "--provider", "anthropic", "--ticks", "1", "--workers", "2", env=env(api, tmp_path,
                                                                                                  key=wrong))
        assert p.returncode == 1, p.stdout + p.stderr
        assert "6 failed: " in p.stdout and "401" in p.stdout, p.stdout
        assert p.stderr.strip().splitlines()[-1].startswith("fleet: every turn of the run failed (6 of 6)")
        deltas = ledger(origin(repo))
        assert len(deltas) == 6 and all(d["ops"] == [] and "401" in d["meta"]["error"] for d in deltas)
        s = fleet(repo, "status", env=env(None, tmp_path, key=None))
        needs = [line for line in s.stdout.splitlines() if line.startswith("needs you:")]
        assert needs and "6 of 6 turn(s) of the last tick failed" in needs[0], s.stdout
        assert "(6 of them failed turns)" in s.stdout
        for out in (p.stdout, p.stderr, s.stdout, s.stderr):
            assert wrong not in out and KEY not in out
