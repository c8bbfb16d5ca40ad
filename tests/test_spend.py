"""Budgets over time (fleet/spend.py): what a UTC day and month spent, read
from main's own records (state/fleet.json at the tick commits), with one
git log and one cat-file batch, in a full clone and a shallow one alike."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run

from fleet import canonical
from fleet.config import Budget
from fleet.git import Git
from fleet.ledger import TRAILERS
from fleet.records import Usage
from fleet.repo import FleetRepo
from fleet.spend import Period, spending

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
