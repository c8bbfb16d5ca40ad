"""Prompts (fleet/prompt.py): one shared, cacheable prefix per tick; each agent within its budget."""

from __future__ import annotations

from conftest import Fleet

from fleet import world
from fleet.prompt import PromptBuilder, tokens
from fleet.state import GitSnapshot
from fleet.world import View


def snapshot(f: Fleet) -> GitSnapshot:
    return GitSnapshot(f.git, f.main())



def test_every_agent_shares_one_prefix_and_stays_in_budget(fleet: Fleet) -> None:
    snap = snapshot(fleet)
    builder = PromptBuilder(View(snap, tick=snap.tick + 1), world.load(snap.config, snap.read).prompt, 2000)
    prompts = {a: builder.for_agent(a) for a in snap.config.agents}
    prefixes = {p.system[0]["text"] for p in prompts.values()}
    assert len(prefixes) == 1  # one cacheable prefix for the whole tick
    assert all(p.system[0]["cache_control"] == {"type": "ephemeral"} for p in prompts.values())
    for agent, p in prompts.items():
        assert p.total_tokens <= 2000 + tokens(p.messages[0]["content"])
        assert p.system[1]["text"].startswith(f"You are {agent}.")
