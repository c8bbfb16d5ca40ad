"""`fleet plan` and the words of usage errors: the library names no option,
the command adds its own."""

from __future__ import annotations

import pytest
from conftest import Fleet, run

from fleet.plan import UnknownAgents, roster
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
