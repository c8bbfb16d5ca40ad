"""Budgets over time (fleet/spend.py): what a UTC day and month spent, read
from main's own records (state/fleet.json at the tick commits), with one
git log and one cat-file batch, in a full clone and a shallow one alike."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.servers` from any working directory

from fleet import canonical  # noqa: E402
from fleet.commands.init import init  # noqa: E402
from fleet.config import Budget  # noqa: E402
from fleet.engine.write import bounded_usage, spent_by  # noqa: E402
from fleet.git import Git  # noqa: E402
from fleet.ledger import TRAILERS  # noqa: E402
from fleet.records import Usage  # noqa: E402
from fleet.repo import FleetRepo  # noqa: E402
from fleet.spend import Period, spending  # noqa: E402
from tests.servers.anthropic_api import AnthropicAPI, Reply  # noqa: E402

AT = dt.datetime(2026, 5, 15, 13, 0, tzinfo=dt.UTC)


def ts(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def usage(tokens: int, usd: float) -> dict[str, Any]:
    return Usage(input_tokens=tokens, micro_usd=round(usd * 1_000_000)).to_json()


def tick_commit(git: Git, parent: str, when: str, tokens: int, usd: float) -> str:
    """A tick commit as the merge writes it: fleet.json's totals raised by ``last``, the trailers, at ``when``."""
    fleet = json.loads(git.show(parent, "state/fleet.json"))
    tick = fleet["tick"] + 1
    last = {"applied": 1, "quarantined": 0, "held": 0, "late": 0, "usage": usage(tokens, usd)}
    totals = dict(fleet["totals"], applied=fleet["totals"]["applied"] + 1,
                  usage=(Usage.parse(fleet["totals"].get("usage")) + Usage.parse(last["usage"])).to_json())
    doc = dict(fleet, tick=tick, last=last, totals=totals)
    trailers = "\n".join(f"{k}: {v}" for k, v in zip(TRAILERS, (tick, 1, 0, 0, 0, 0)))
    return git.write_commit(parent, f"fleet: tick {tick}: 1 applied\n\n{trailers}\n",
                            {"state/fleet.json": canonical.dumps(doc)}, [], when=ts(when))


def person_commit(git: Git, parent: str, when: str) -> str:
    return git.write_commit(parent, "a person's note\n", {"NOTES.md": when.encode()}, [], when=ts(when))


def history(fleet: Fleet, *steps: tuple[str, int, float] | str) -> str:
    """Commits on main, oldest first: (when, tokens, dollars) for a tick, a bare time for a person's commit."""
    head = fleet.main()
    for step in steps:
        head = person_commit(fleet.git, head, step) if isinstance(step, str) else tick_commit(fleet.git, head, *step)
    fleet.git.run("update-ref", "refs/heads/main", head)
    return head


def with_budgets(fleet: Fleet, **budgets: dict[str, Any]) -> Any:
    cfg = FleetRepo(fleet.path).snapshot().config
    return type(cfg)(**{**cfg.__dict__, **{f"{k}_budget": Budget(**v) for k, v in budgets.items()}})


STEPS = (("2026-04-30T23:00:00Z", 1000, 1.0),   # last month
         ("2026-05-02T10:00:00Z", 200, 0.2),    # this month
         ("2026-05-14T23:59:59Z", 30, 0.03),    # yesterday, a second before midnight
         "2026-05-15T00:00:00Z",                # a person's commit at midnight: no tick
         ("2026-05-15T00:00:01Z", 4, 0.004),    # today
         ("2026-05-15T12:00:00Z", 5, 0.005))


def test_a_day_and_a_month_spend_what_their_ticks_spent(fleet: Fleet) -> None:
    head = history(fleet, *STEPS)
    cfg = with_budgets(fleet, day={"usd": 0.01}, month={"tokens": 240})
    s = spending(FleetRepo(fleet.path), head, cfg, AT)
    assert (s.day.usage.tokens, s.day.usage.micro_usd) == (9, 9000)
    assert (s.month.usage.tokens, s.month.usage.micro_usd) == (239, 239000)
    assert s.day.spent is None and s.month.spent is None and s.stop() is None
    assert s.day.left() == {"tokens": None, "usd": 0.001} and s.month.left() == {"tokens": 1, "usd": None}
    assert s.to_json()["day"]["since"] == "2026-05-15T00:00:00Z" and s.to_json()["month"]["until"] == "2026-06-01T00:00:00Z"
    # the walk stopped at the first commit before the month: it never read the fleet's older history
    assert [m.time for m in s.history.marks][-1] == ts("2026-04-30T23:00:00Z")


def test_a_spent_budget_says_which_and_when_it_resumes(fleet: Fleet) -> None:
    head = history(fleet, *STEPS)
    day = spending(FleetRepo(fleet.path), head, with_budgets(fleet, day={"usd": 0.009}), AT)
    stop = day.stop()
    assert stop is day.day and stop.spent == "$0.0090 of $0.01"
    assert stop.why() == ("budgets.day is spent ($0.0090 of $0.01 since 2026-05-15T00:00:00Z); ticks resume at "
                          "2026-05-16T00:00:00Z, midnight UTC")
    both = spending(FleetRepo(fleet.path), head, with_budgets(fleet, day={"tokens": 9}, month={"tokens": 100}), AT)
    assert both.stop() is both.month  # of two spent budgets, the one that lasts longer
    assert both.stop().why().endswith("ticks resume at 2026-06-01T00:00:00Z, the first of the month (UTC)")
    assert both.to_json()["resumes"] == "2026-06-01T00:00:00Z"


def test_a_new_day_starts_with_nothing_spent(fleet: Fleet) -> None:
    head = history(fleet, *STEPS)
    s = spending(FleetRepo(fleet.path), head, with_budgets(fleet, day={"usd": 0.001}), AT + dt.timedelta(days=1))
    assert s.day.usage == Usage() and s.stop() is None
    assert s.month.usage.tokens == 239
    december = spending(FleetRepo(fleet.path), head, with_budgets(fleet), dt.datetime(2026, 12, 31, tzinfo=dt.UTC))
    assert december.month.usage == Usage() and december.month.until == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_a_fleet_younger_than_the_month_counts_from_genesis(fleet: Fleet) -> None:
    cfg = with_budgets(fleet)
    genesis = fleet.main()
    fleet.git.run("update-ref", "refs/heads/main", fleet.git.write_commit(
        None, "genesis\n", {"state/fleet.json": fleet.git.show(genesis, "state/fleet.json")}, [],
        when=ts("2026-05-10T00:00:00Z")))
    head = history(fleet, ("2026-05-15T01:00:00Z", 7, 0.5))
    s = spending(FleetRepo(fleet.path), head, cfg, AT)
    assert s.day.usage.tokens == 7 and s.month.usage.tokens == 7


def test_a_shallow_clone_is_deepened_to_the_month_and_counts_the_same(fleet: Fleet, tmp_path: Path) -> None:
    head = history(fleet, *STEPS)
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(fleet.path), str(bare)], check=True)
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{bare}", str(shallow)], check=True)
    assert Git(shallow).text("rev-list", "--count", "HEAD") == "1"
    repo = FleetRepo(shallow)
    repo.fetch()
    s = spending(repo, head, with_budgets(fleet), AT)
    assert (s.day.usage.tokens, s.month.usage.tokens) == (9, 239)
    # deepened to the month's start, not to genesis
    assert int(Git(shallow).text("rev-list", "--count", head)) < len(STEPS) + 1


def test_status_shows_the_day_and_the_month(fleet: Fleet) -> None:
    raw = json.loads(fleet.read("state/config.json"))
    raw["budgets"]["day"] = {"tokens": 10 ** 9, "usd": 3.0}
    fleet.git.run("update-ref", "refs/heads/main", fleet.git.write_commit(
        fleet.main(), "a day budget\n", {"state/config.json": canonical.dumps(raw)}, []))
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    history(fleet, (now, 1234, 0.25))
    s = json.loads(run(fleet, "status", "--json").output)
    day = s["budgets"]["day"]
    assert (day["tokens"], day["cost_usd"], day["left"]) == (1234, 0.25, {"tokens": 10 ** 9 - 1234, "usd": 2.75})
    assert day["budget"] == {"tokens": 10 ** 9, "usd": 3.0} and not day["spent"]
    assert s["budgets"]["month"]["budget"] is None and s["clock"]["due"] is True
    text = run(fleet, "status").output
    assert "today: $0.2500 and 1,234 tokens spent, $2.7500 and 999,998,766 tokens left of budgets.day" in text
    assert "this month: $0.2500 and 1,234 tokens spent (no budgets.month)" in text


def test_period_figures() -> None:
    p = Period("day", AT, AT, Usage(input_tokens=5, micro_usd=2_000_000), Budget(tokens=10, usd=2.0))
    assert p.spent == "$2.0000 of $2.00" and p.left() == {"tokens": 5, "usd": 0.0}
    assert Period("day", AT, AT, Usage(), Budget(tokens=0)).spent == "0 of 0 tokens"  # a zero budget spends nothing
    assert Period("day", AT, AT, Usage(input_tokens=10 ** 6), Budget()).spent is None


@pytest.mark.parametrize("n", [1])
def test_usage_subtracts(n: int) -> None:
    a, b = Usage(1, 2, 3, 4, 5), Usage(10, 20, 30, 40, 50)
    assert b - a == Usage(9, 18, 27, 36, 45) and (b - a) + a == b


# -- deltas quarantined count too: a budget is never overspent silently ------------------
#
# A walkthrough found budgets overspent without limit: spend was read only from deltas
# that parsed, so a delta the schema refused (a cost_usd over its maximum) and a branch
# refused unread (unsigned, or signed by a key main does not allow) spent $0 on record,
# and tick after tick ran at full price.

KEY = "sk-ant-test-" + "b" * 24
MODEL = "claude-test-1"
USAGE = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "delta.schema.json").read_bytes())[
    "properties"]["meta"]["properties"]["usage"]["properties"]
MAX_COST = USAGE["cost_usd"]["maximum"]
MAX_TOKENS = USAGE["input_tokens"]["maximum"]


def paying_fleet(tmp_path: Path, price: float, **config: Any) -> Path:
    """A fleet on a priced model with a day budget, its config committed by a person."""
    repo = tmp_path / "paying"
    init(repo)
    path = repo / "state" / "config.json"
    raw = json.loads(path.read_bytes())
    raw["run"].update(model=MODEL, max_retries=0, turn_timeout_seconds=20)
    raw["models"] = {MODEL: {"input": price, "output": price, "cache_read": price, "cache_write": price}}
    raw["budgets"] = {"day": {"usd": 0.01}}
    raw.update(config)
    path.write_bytes(canonical.dumps(raw))
    Git(repo).run("-c", "user.name=Person", "-c", "user.email=person@example.com", "commit", "-qam", "a paying fleet")
    return repo


def fleet_run(repo: Path, api: AnthropicAPI, tmp_path: Path, ticks: int, workers: int = 2) -> dict[str, Any]:
    """`fleet run --provider anthropic` as a user runs it, against the local Messages API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "FLEET_"))}
    env.update(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.url, XDG_CACHE_HOME=str(tmp_path / "cache"),
               PYTHONWARNINGS="ignore::DeprecationWarning")
    p = subprocess.run([sys.executable, "-m", "fleet", "run", "--provider", "anthropic", "--ticks", str(ticks),
                        "--workers", str(workers), "--json"], cwd=repo, capture_output=True, text=True, env=env, timeout=300)
    assert "Traceback" not in p.stdout + p.stderr and "internal error" not in p.stderr, p.stderr
    assert p.returncode in (0, 3), p.stderr
    return json.loads(p.stdout)


def fleet_doc(repo: Path) -> dict[str, Any]:
    return json.loads(Git(repo / ".git" / "fleet" / "origin.git").show("refs/heads/main", "state/fleet.json"))


def turns_by_tick(api: AnthropicAPI) -> dict[int, int]:
    out: dict[int, int] = {}
    for seen in api.requests:
        tick = int(seen.system_text.split("It is tick ")[1].split(".")[0])
        out[tick] = out.get(tick, 0) + 1
    return out


@pytest.mark.slow
def test_deltas_refused_for_a_cost_over_the_schemas_maximum_count_and_the_run_stops_at_the_budget(
        tmp_path: Path) -> None:
    """The highest price config takes and a model that answers with a huge (but valid)
    token count: every turn costs more than a delta may record, so the schema refuses
    every delta. Each still counts, its cost at the schema's maximum, and the run stops
    after one tick, at the day budget."""
    repo = paying_fleet(tmp_path, price=10_000)
    huge = MAX_TOKENS // 5  # at $10,000 a million tokens: $2,000,000 a turn
    with AnthropicAPI() as api:
        api.rule(Reply(usage={"input_tokens": huge}))
        report = fleet_run(repo, api, tmp_path, ticks=3)
        assert api.errors == []
        asked = turns_by_tick(api)
    assert [t["tick"] for t in report["ticks"]] == [1] and asked == {1: 6}  # no turn of tick 2 was ever asked
    assert "budgets.day is spent" in report["stopped"] and "tick 2 did not start" in report["stopped"]
    last = fleet_doc(repo)["last"]
    assert (last["applied"], last["quarantined"]) == (0, 6)
    assert last["usage"]["cost_usd"] == 6 * MAX_COST  # each refused delta at the most a delta may record
    assert last["usage"]["input_tokens"] == 6 * huge  # valid figures count as written
    assert report["cost_usd"] == 6 * MAX_COST


@pytest.mark.slow
def test_a_tick_refused_unread_stops_the_next_until_a_person_fixes_it(tmp_path: Path) -> None:
    """limits.max_delta_bytes below any turn's delta: every delta is quarantined unread, so
    what the tick spent is unknown. The run stops before the next tick and says why; a
    person's fix on main lets ticks run again, counted, until the budget is spent. (It
    was a signing key the allowed signers do not name; a worker now refuses that before
    any turn.)"""
    repo = paying_fleet(tmp_path, price=1000)
    path = repo / "state" / "config.json"
    raw = json.loads(path.read_bytes())
    raw["limits"] = {**raw.get("limits", {}), "max_delta_bytes": 256}
    path.write_bytes(canonical.dumps(raw))
    git = Git(repo)
    git.run("-c", "user.name=Person", "-c", "user.email=person@example.com", "commit", "-qam", "tiny deltas")
    with AnthropicAPI() as api:
        first = fleet_run(repo, api, tmp_path, ticks=3, workers=1)
        assert turns_by_tick(api) == {1: 6}  # tick 1's turns were paid for; nothing after
        assert [t["tick"] for t in first["ticks"]] == [1] and first["quarantined"] == 6
        assert "tick 2 did not start: budgets.day cannot be counted: tick 1 spent an unknown amount, all its 6 " \
               "delta(s) quarantined unread" in first["stopped"], first["stopped"]
        assert "over limits.max_delta_bytes (256)" in first["stopped"]
        # plan and status say the same, and the spend on record is still what was read: nothing
        plan = subprocess.run([sys.executable, "-m", "fleet", "plan", "--json"], cwd=repo, capture_output=True,
                              text=True, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert plan.returncode == 3 and "cannot be counted" in json.loads(plan.stdout)["why"], plan.stdout
        again = fleet_run(repo, api, tmp_path, ticks=1, workers=1)  # a second run, with nothing changed: no tick
        assert again["ticks"] == [] and turns_by_tick(api) == {1: 6}
        # the person's fix, on the fleet's main: room for a turn's delta
        git.run("merge", "--ff-only", "--quiet", "refs/fleet/origin/main")
        raw = json.loads(path.read_bytes())
        raw["limits"]["max_delta_bytes"] = 65536
        path.write_bytes(canonical.dumps(raw))
        git.run("-c", "user.name=Person", "-c", "user.email=person@example.com", "commit", "-qam", "room again")
        fixed = fleet_run(repo, api, tmp_path, ticks=3, workers=1)
        origin = Git(repo / ".git" / "fleet" / "origin.git")
        assert [t["tick"] for t in fixed["ticks"]] == [2] and fixed["quarantined"] == 0 and fixed["cost_usd"] > 0.01, \
            origin.text("grep", "-h", "reason", "refs/heads/main", "--", "state/quarantine/2")
        assert "budgets.day is spent" in fixed["stopped"]
        assert turns_by_tick(api) == {1: 6, 2: 6}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(USAGE) + ["other"]),
                       st.one_of(st.integers(-(2 ** 63), 2 ** 63 - 1), st.floats(allow_nan=True, allow_infinity=True),
                                 st.booleans(), st.none(), st.text(max_size=5),
                                 st.lists(st.integers(), max_size=2))))
def test_a_refused_deltas_usage_counts_within_the_schemas_bounds(usage: dict[str, Any]) -> None:
    """Whatever a refused delta wrote as its usage, it counts as figures from 0 to the delta
    schema's maximum, never less than a valid number it wrote; and what counted is a
    usage figure the delta schema accepts."""
    out = bounded_usage(usage)
    assert set(out) == set(USAGE)
    for name, value in out.items():
        top = USAGE[name]["maximum"]
        assert 0 <= value <= top and (isinstance(value, float) if name == "cost_usd" else type(value) is int)
        given_value = usage.get(name)
        if isinstance(given_value, int | float) and not isinstance(given_value, bool) and given_value == given_value \
                and abs(given_value) != float("inf"):
            assert value >= min(given_value, top)  # never under-counted
    from fleet import schemas

    assert schemas.first_error(schemas.protocol("delta"), {
        "id": "t1-w1-s1-0", "tick": 1, "utc": "2026-01-01T00:00:00.000000Z", "worker": "w1", "stream": "s1",
        "agent": "a", "ops": [], "meta": {"noop": "refused", "usage": out}}) is None
    u = Usage.parse(out)
    assert u.micro_usd <= round(MAX_COST * 1_000_000) and u.tokens <= 4 * MAX_TOKENS


@pytest.mark.parametrize("record,counted", [
    ({"raw": json.dumps({"meta": {"usage": {"cost_usd": 1e300, "input_tokens": 7}}})}, (7, MAX_COST)),
    ({"raw": json.dumps({"meta": {"usage": {"output_tokens": 10 ** 12}}})}, (MAX_TOKENS, 0.0)),
    ({"raw": json.dumps({"meta": {}})}, (0, 0.0)),  # read: it says it spent nothing
    ({"delta": {"meta": {"usage": {"input_tokens": 3, "cost_usd": 0.5}}}}, (3, 0.5)),
    ({"raw": '{"meta": {"usage": {"input_tokens": 9}}'}, None),  # cut short: not read
    ({"raw": "not json"}, None),
    ({"raw": "[1, 2]"}, None),
    ({}, None),  # refused unread: a symbolic link, an unsigned branch
])
def test_what_a_quarantine_record_counts(record: dict[str, Any], counted: tuple[int, float] | None) -> None:
    spent = spent_by(record)
    if counted is None:
        assert spent is None
    else:
        assert spent is not None and (Usage.parse(spent).tokens, spent["cost_usd"]) == counted


def refused_tick(git: Git, parent: str, when: str, records: list[dict[str, Any]], applied: int = 0) -> str:
    """A tick commit whose deltas were quarantined with ``records`` (and ``applied`` more applied)."""
    fleet = json.loads(git.show(parent, "state/fleet.json"))
    tick = fleet["tick"] + 1
    spent = Usage.total(spent_by(r) for r in records)
    last = {"applied": applied, "quarantined": len(records), "held": 0, "late": 0, "usage": spent.to_json()}
    totals = dict(fleet["totals"], usage=(Usage.parse(fleet["totals"].get("usage")) + spent).to_json())
    lines = b"".join(canonical.dumps_line({**r, "tick": tick, "worker": "w1"}) + b"\n" for r in records)
    trailers = "\n".join(f"{k}: {v}" for k, v in zip(TRAILERS, (tick, applied, len(records), 0, 0, 0)))
    return git.write_commit(parent, f"fleet: tick {tick}\n\n{trailers}\n",
                            {"state/fleet.json": canonical.dumps(dict(fleet, tick=tick, last=last, totals=totals)),
                             f"state/quarantine/{tick}/w1.jsonl": lines}, [], when=ts(when))


UNREAD = {"path": "deltas/w1/s1/x.json", "source": "refs/heads/fleet/t1/w1", "size": 0,
          "reason": "worker branch fleet/t1/w1: its commit is not signed (keys/a, signing.allowed_signers)"}


def test_a_tick_whose_deltas_were_all_refused_unread_stops_the_next_until_a_commit_or_the_next_day(
        fleet: Fleet) -> None:
    refused = refused_tick(fleet.git, fleet.main(), "2026-05-15T10:00:00Z", [UNREAD, dict(UNREAD, path="b.json")])
    fleet.git.run("update-ref", "refs/heads/main", refused)
    repo = FleetRepo(fleet.path)
    s = spending(repo, refused, with_budgets(fleet, day={"usd": 5.0}), AT)
    stop = s.stop()
    assert stop is s.unknown and stop is not None and (stop.tick, stop.deltas, stop.name) == (1, 2, "day")
    assert stop.why().startswith("budgets.day cannot be counted: tick 1 spent an unknown amount, all its 2 delta(s) "
                                 "quarantined unread (first: b.json: worker branch fleet/t1/w1: its commit is not signed")
    assert stop.why().endswith("no tick starts until a commit on main (one that fixes this) or 2026-05-16T00:00:00Z, "
                               "when the next day begins")
    assert s.to_json()["stopped"] == stop.why() and s.to_json()["unknown"]["deltas"] == 2
    # a month budget alone: until the month ends; no budget over time: nothing to count against
    month = spending(repo, refused, with_budgets(fleet, month={"tokens": 10}), AT)
    assert month.stop() is month.unknown and month.unknown is not None and month.unknown.name == "month"
    assert spending(repo, refused, with_budgets(fleet, tick={"usd": 1.0}), AT).stop() is None
    # the next day the tick is yesterday's: today's budget is not stopped by it
    assert spending(repo, refused, with_budgets(fleet, day={"usd": 5.0}), AT + dt.timedelta(days=1)).stop() is None
    # a person's commit on main after it (a fix) lets the next tick start
    fixed = person_commit(fleet.git, refused, "2026-05-15T11:00:00Z")
    assert spending(repo, fixed, with_budgets(fleet, day={"usd": 5.0}), AT).stop() is None


@pytest.mark.parametrize("records,applied", [
    ([UNREAD, {**UNREAD, "raw": json.dumps({"meta": {"usage": {"input_tokens": 5}}})}], 0),  # one was read
    ([UNREAD], 1),  # a delta applied: what it spent was read
    ([{**UNREAD, "raw": json.dumps({"meta": {}})}], 0),  # read, and it says it spent nothing
])
def test_a_tick_with_anything_read_is_counted_not_stopped(fleet: Fleet, records: list[dict[str, Any]],
                                                          applied: int) -> None:
    head = refused_tick(fleet.git, fleet.main(), "2026-05-15T10:00:00Z", records, applied)
    fleet.git.run("update-ref", "refs/heads/main", head)
    s = spending(FleetRepo(fleet.path), head, with_budgets(fleet, day={"tokens": 100}), AT)
    assert s.unknown is None and s.stop() is None
