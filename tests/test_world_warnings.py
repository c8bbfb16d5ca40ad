"""What a world allows but its author likely did not mean: `fleet validate`
warnings, not problems (fleet.world.warnings).

An agent with no persona, where the prompt names {persona} for each agent.

The persona is optional in the config: fleet init's world and the tickets example
keep it in a document their prompt lists by {agent}, so a problem would refuse
them. Where the prompt's {persona} is the agent's own (the ask, a section of text,
or one whose item's closed schema has no field of that name), each agent without
one is named; where the item may hold its own, none is."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
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


# -- a tool's input against the field it writes ----------------------------------------
BOUNDS = {"maximum": "up", "minimum": "down", "maxLength": "up", "minLength": "down"}


def _bounded_world(field: dict[str, Any], given: dict[str, Any], when: list[Any] | None = None,
                   op: str = "set") -> dict[str, bytes]:
    """Cards with a field 'v' of schema ``field``; a tool 'put' writes its input 'v'
    (schema ``given``) there, by ``op`` (set, or create with the field in the document)."""
    def change(cfg: dict[str, Any], tools: dict[str, Any]) -> None:
        effect: dict[str, Any] = ({"op": "set", "doc": "cards/{input.which}", "path": "v", "value": "{input.v}"}
                                  if op == "set" else
                                  {"op": "create", "doc": "cards/{id}", "value": {"owner": "{agent}", "v": "{input.v}"}})
        if when:
            effect["when"] = when
        tools["put"] = {"description": "Put v.", "effects": [effect],
                        "input": {"type": "object", "additionalProperties": False, "required": ["which", "v"],
                                  "properties": {"which": {"type": "string", "pattern": "^[a-z]+$"}, "v": given}}}
    files = card_world("cards", ["title"], True, True, change)
    schema = json.loads(files["schemas/card.schema.json"])
    schema["$defs"]["card"]["properties"]["v"] = field
    files["schemas/card.schema.json"] = canonical.dumps(schema)
    return files


def _warned(files: dict[str, bytes]) -> list[tuple[str, str]]:
    snap = MemorySnapshot(files)
    built, problems = world.check(snap.config, snap.read)
    assert problems == [] and built is not None, problems
    return [w for w in world.warnings(snap.config, snap.read, built) if w[0] != CONFIG]  # (not the personas)


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(sorted(BOUNDS)), theirs=st.integers(0, 50), mine=st.one_of(st.none(), st.integers(0, 50)),
       op=st.sampled_from(["set", "create"]))
def test_an_input_bound_looser_than_its_fields_is_warned_of(key: str, theirs: int, mine: int | None, op: str) -> None:
    kind = "integer" if key in ("maximum", "minimum") else "string"
    field = {"type": kind, key: theirs}
    given_ = {"type": kind, **({key: mine} if mine is not None else {})}
    got = _warned(_bounded_world(field, given_, op=op))
    looser = mine is not None and (mine > theirs if BOUNDS[key] == "up" else mine < theirs)
    assert len(got) == int(looser), got
    if looser:
        [(f, m)] = got
        assert f == "state/tools.json" and m.startswith("put.effects[0].value: {input.v} may be at "), m
        assert f"{mine}" in m and f"cards documents' v is at {'most' if BOUNDS[key] == 'up' else 'least'} {theirs}" in m
        assert "(schemas/card.schema.json): every such call is quarantined" in m and "\n" not in m


@pytest.mark.parametrize("when, warned", [
    (None, True),
    ([["{input.v}", "!=", "decline"]], False),  # the tickets example's review: "decline" deletes instead
    ([["{input.v}", "not in", ["decline", "hold"]]], False),
    ([["{input.v}", "!=", "hold"]], True),  # "decline" is still written
    ([["{input.v}", "==", "approve"]], False),  # says more of it than is judged: left alone
])
def test_an_enum_the_field_refuses_is_warned_of_unless_a_condition_rules_it_out(when: Any, warned: bool) -> None:
    got = _warned(_bounded_world({"enum": ["approve", "changes"]}, {"enum": ["approve", "changes", "decline"]}, when))
    assert len(got) == int(warned), got
    if warned:
        assert got[0][1].endswith('{input.v} may be "decline" (the tool\'s input schema), but cards documents\' v is '
                                  'one of "approve", "changes" (schemas/card.schema.json): every such call is '
                                  "quarantined"), got


def test_the_walkthroughs_amount_is_warned_of_by_validate(fleet: Fleet) -> None:
    tools = json.loads((fleet.path / "state/tools.json").read_text())
    tools["update_bio"]["input"]["properties"]["bio"]["maxLength"] = 5000  # the agents' schema: at most 500
    (fleet.path / "state/tools.json").write_text(json.dumps(tools))
    r = run(fleet, "validate")
    assert "warning: state/tools.json: update_bio.effects[0].value: {input.bio} may be at most 5000 characters " \
           "(the tool's input schema), but agents documents' bio is at most 500 characters" in r.stderr, r.stderr
    subprocess.run(["git", "checkout", "-q", "state"], cwd=fleet.path, check=True)
