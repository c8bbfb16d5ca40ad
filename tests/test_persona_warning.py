"""An agent with no persona, where the prompt names {persona} for each agent: a
`fleet validate` warning, not a problem (fleet.world.warnings).

The persona is optional in the config: fleet init's world and the tickets example
keep it in a document their prompt lists by {agent}, so a problem would refuse
them. Where the prompt's {persona} is the agent's own (the ask, a section of text,
or one whose item's closed schema has no field of that name), each agent without
one is named; where the item may hold its own, none is."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from conftest import Fleet, run
from hypothesis import given, settings
from hypothesis import strategies as st
from test_world_fields import CONFIG, card_world

from fleet import canonical, world
from fleet.state import MemorySnapshot

# where {persona} is in the prompt -> whether it is the agent's (True) or may be the card's (False)
PLACES: dict[str, tuple[dict[str, Any], bool]] = {
    "ask": ({"ask": "Tick {tick}: your turn, {agent}. {persona}"}, True),
    "text": ({"own": [{"text": "You are {agent}. {persona}"}]}, True),
    "doc, closed, no such field": ({"own": [{"doc": "cards/{agent}", "text": "{persona}"}]}, True),
    "list items, closed": ({"own": [{"doc": "cards/{agent}", "list": "notes", "line": "{persona}: {text}"}]}, True),
    "doc with the field": ({"own": [{"doc": "cards/{agent}", "text": "{persona}"}]}, False),
    "nowhere": ({"own": [{"text": "You are {agent}."}]}, False),
}


def _world(place: str, closed: bool, personas: dict[str, str]) -> dict[str, bytes]:
    prompt, _ = PLACES[place]
    fields = ["title", "persona"] if place == "doc with the field" else ["title"]

    def change(cfg: dict[str, Any], tools: dict[str, Any]) -> None:
        cfg["agents"] = {a: ({"persona": p} if p else {}) for a, p in personas.items()}
        cfg["prompt"] = "state/prompt.json"
    files = card_world("cards", fields, closed, False, change)
    files["state/prompt.json"] = canonical.dumps(prompt)
    return files


@settings(max_examples=60, deadline=None)
@given(place=st.sampled_from(sorted(PLACES)), closed=st.booleans(),
       personas=st.dictionaries(st.from_regex(r"\A[a-z]{2,8}\Z"), st.sampled_from(["", "Kind.", "Terse."]),
                                min_size=1, max_size=4))
def test_an_agent_without_persona_is_warned_of_where_the_prompt_names_its_own(
        place: str, closed: bool, personas: dict[str, str]) -> None:
    snap = MemorySnapshot(_world(place, closed, personas))
    built, problems = world.check(snap.config, snap.read)
    assert problems == [] and built is not None
    agents_own = PLACES[place][1] and (closed or place in ("ask", "text"))
    got = world.warnings(snap.config, snap.read, built)
    assert [w[1].split(":", 1)[0] for w in got] == \
        ([f"agents.{a}" for a in sorted(personas) if not personas[a]] if agents_own else [])
    assert all(f == CONFIG and "no persona, though the prompt names {persona}" in m and "\n" not in m for f, m in got)


def test_validate_warns_and_passes_and_the_example_worlds_are_not_warned(fleet: Fleet) -> None:
    r = run(fleet, "validate")  # fleet init's world: personas in the agents' documents
    assert "warning" not in r.output and "persona" not in r.output, r.output
    prompt = json.loads((fleet.path / "state/prompt.json").read_text())
    prompt["own"][0] = {"text": "You are {agent}. {persona}"}  # now the config's persona, which none has
    (fleet.path / "state/prompt.json").write_text(json.dumps(prompt))
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    for a in cfg["agents"]:
        cfg["agents"][a]["persona"] = f"{a} is kind."
    del cfg["agents"]["basil"]["persona"]
    (fleet.path / "state/config.json").write_text(json.dumps(cfg))
    r = run(fleet, "validate")  # exit 0: a warning
    assert r.stderr.splitlines()[0] == ("warning: state/config.json: agents.basil: no persona, though the prompt names "
                                        "{persona} for each agent (in its own sections or ask): basil's prompt has "
                                        "nothing there"), r.stderr
    assert "0 problem(s)" in r.output
    subprocess.run(["git", "checkout", "-q", "state"], cwd=fleet.path, check=True)


def test_the_tickets_example_keeps_personas_in_documents_unwarned(tmp_path: Any) -> None:
    from fleet.commands.init import init

    init(tmp_path / "t", example="tickets")
    r = run(Fleet(tmp_path / "t"), "validate")
    assert "warning" not in r.output, r.output
