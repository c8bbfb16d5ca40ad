"""`fleet plan` and the words of usage errors: the library names no option,
the command adds its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Fleet, fleet_cli, run
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.commands.init import init
from fleet.plan import UnknownAgents, agents_of, assign, roster
from fleet.providers import ProviderUnavailable, choose
from fleet.repo import FleetRepo


def test_unknown_agents_are_named_with_the_option_that_asked(fleet: Fleet) -> None:
    with pytest.raises(UnknownAgents) as e:
        roster(["ada", "bob"], ["bob", "zed"])
    assert str(e.value) == "zed not in state/config.json agents" and e.value.code == 2
    r = run(fleet, "plan", "--agents", "zed", code=2)
    assert r.output == "fleet: --agents: zed not in state/config.json agents\n"
    r = run(fleet, "work", "--worker", "1", "--workers", "1", "--agents", "zed", code=2)
    assert "fleet: --agents: zed not in state/config.json agents\n" in r.output


def test_an_unavailable_provider_is_named_with_the_option_that_asked(fleet: Fleet) -> None:
    cfg = FleetRepo(fleet.path).snapshot().config
    with pytest.raises(ProviderUnavailable) as e:
        choose("nosuch", cfg)
    assert "--" not in str(e.value) and e.value.code == 2
    r = run(fleet, "work", "--worker", "1", "--workers", "1", "--provider", "nosuch", code=2)
    assert "fleet: --provider: unknown provider 'nosuch' (known: auto, offline, anthropic)\n" in r.output
    with pytest.raises(ProviderUnavailable) as e:
        choose("anthropic", cfg)
    assert "--" not in str(e.value)
    assert e.value.for_option("--provider") == (
        "--provider says anthropic, which needs ANTHROPIC_API_KEY; set it, or use --provider auto (anthropic "
        "when a key is set) or --provider offline")


def test_plan_is_json_for_from_json(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    p = fleet_cli(repo, "plan", "--workers", "3", "--json")
    plan = json.loads(p.stdout)
    assert plan["tick"] == 1 and plan["push"] == "direct"
    agents = sorted(a for v in plan["assignment"].values() for a in v)
    assert agents == ["ada", "basil", "cleo", "dara", "eli", "fen"]
    assert all({"worker", "name", "agents"} <= set(i) for i in plan["matrix"]["include"])
    matrix = json.loads(fleet_cli(repo, "plan", "--workers", "3", "--matrix").stdout)
    assert matrix == plan["matrix"]
    assert json.loads(fleet_cli(repo, "plan", "--workers", "40", "--json").stdout)["push"] == "coalesced"
    bad = fleet_cli(repo, "plan", "--workers", "300")
    assert bad.returncode == 2 and "256" in bad.stderr


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text("abcdefghij0123456789-", min_size=1, max_size=12), min_size=1, max_size=80, unique=True),
       st.integers(1, 40))
def test_adding_a_worker_moves_only_its_share(agents: list[str], workers: int) -> None:
    before = assign(agents, workers)
    after = assign(agents, workers + 1)
    new = f"w{workers + 1}"
    for name, mine in before.items():
        moved = set(mine) - set(after[name])
        assert moved <= set(after[new])  # whoever moved, moved to the new worker
    assert sorted(a for v in after.values() for a in v) == sorted(agents)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), max_size=60, unique=True), st.integers(1, 40))
def test_one_workers_agents_are_its_share_of_the_whole_assignment(agents: list[str], workers: int) -> None:
    whole = assign(agents, workers)
    for i in range(1, workers + 1):
        assert agents_of(agents, workers, f"w{i}") == whole[f"w{i}"]
