"""Turns (fleet/streams.py): one delta per agent, deterministic offline, spending within budget."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Fleet

from fleet.config import Budget
from fleet.providers.offline import OfflineProvider
from fleet.state import GitSnapshot
from fleet.streams import BudgetExhausted, Spending, run_turns


def snapshot(f: Fleet) -> GitSnapshot:
    return GitSnapshot(f.git, f.main())



def test_one_delta_per_agent_from_the_offline_provider(fleet: Fleet) -> None:
    snap = snapshot(fleet)
    agents = sorted(snap.config.agents)
    bodies = asyncio.run(run_turns(OfflineProvider(seed=1), snap, agents, tick=1, worker="w1"))
    assert sorted(b["agent"] for b in bodies) == agents
    assert all(b["worker"] == "w1" and b["tick"] == 1 and b["meta"]["provider"] == "offline" for b in bodies)
    again = asyncio.run(run_turns(OfflineProvider(seed=1), snap, agents, tick=1, worker="w1"))
    assert [b["ops"] for b in bodies] == [b["ops"] for b in again]  # deterministic for a seed


def test_spending_refuses_a_turn_past_the_budget_and_settles_what_was_used() -> None:
    s = Spending(Budget(tokens=100))
    s.reserve(60, 0.0)
    with pytest.raises(BudgetExhausted):
        s.reserve(60, 0.0)
    s.settle(60, 0.0, {"input_tokens": 10, "output_tokens": 5})
    s.reserve(80, 0.0)  # 15 spent, 80 reserved: within 100
    assert s.spent.tokens == 15
