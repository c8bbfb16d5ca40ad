"""Worlds as configuration (fleet/world.py): declarations checked at load, any world runs, no world in fleet's code.

Bad declarations are generated, not listed: every kind of mistake an author
can make in a tool or a prompt, at any place of any declaration, is one line
naming the file and the key. A world made up by the test (names and fields
drawn at random) runs on the offline provider with its agents acting on its
own collections. The offline provider chooses the same for an agent whatever
the number of workers.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import fleet_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import canonical, world
from fleet.delta import Arrival, file_path
from fleet.engine import merge_tick
from fleet.errors import FleetError
from fleet.plan import assign, roster
from fleet.providers.offline import OfflineProvider
from fleet.state import MemorySnapshot
from fleet.streams import run_turns

REPO = Path(__file__).resolve().parents[1]
TOOLS = "state/tools.json"
PROMPT = "state/prompt.json"


def example_files() -> dict[str, bytes]:
    return {p.relative_to(REPO).as_posix(): p.read_bytes()
            for folder in ("state", "schemas") for p in (REPO / folder).rglob("*.json")}


def problems_with(files: dict[str, bytes]) -> list[str]:
    snap = MemorySnapshot(files)
    return world.check(snap.config, snap.read)[1]


def with_tools(tools: Any, prompt: Any = None) -> dict[str, bytes]:
    files = example_files()
    files[TOOLS] = json.dumps(tools).encode()
    if prompt is not None:
        files[PROMPT] = json.dumps(prompt).encode()
    return files


def example_tools() -> dict[str, Any]:
    return json.loads((REPO / TOOLS).read_bytes())


def example_prompt() -> dict[str, Any]:
    return json.loads((REPO / PROMPT).read_bytes())


def test_the_example_world_loads_with_every_tool() -> None:
    files = example_files()
    assert problems_with(files) == []
    snap = MemorySnapshot(files)
    w = world.load(snap.config, snap.read)
    assert sorted(w.tools) == sorted(example_tools())
    assert [t["name"] for t in w.definitions(w.tools)][-1] == world.NOOP  # fleet's own, always offered


# -- every kind of mistake, anywhere -----------------------------------------------------

NAME = st.from_regex(r"\A[a-z][a-z0-9_]{2,12}\Z")


def _place(tools: dict[str, Any], data: st.DataObject) -> tuple[str, int]:
    name = data.draw(st.sampled_from(sorted(tools)))
    return name, data.draw(st.integers(0, len(tools[name]["effects"]) - 1))


MISTAKES = ["unknown collection", "unknown input field", "unknown name", "fixed field", "no rule allows",
            "incr not an integer", "create not an object", "append without id", "bad template", "not a schema",
            "input not an object", "unknown key", "actions name an undeclared tool", "needs unknown collection",
            "prompt unknown collection", "prompt line missing", "prompt bad template"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(MISTAKES), data=st.data())
def test_a_bad_declaration_is_one_line_naming_the_file_and_the_key(kind: str, data: st.DataObject) -> None:
    tools, prompt = example_tools(), None
    name, i = _place(tools, data)
    effect = tools[name]["effects"][i]
    key = f"{name}.effects[{i}]"
    file = TOOLS
    word = data.draw(NAME)
    if kind == "unknown collection":
        effect["doc"] = f"{word}x/{{agent}}"
        key += ".doc"
    elif kind == "unknown input field":
        effect["doc"] = effect["doc"].split("/")[0] + f"/{{input.{word}}}"
        key += ".doc"
    elif kind == "unknown name":
        effect["doc"] = effect["doc"].split("/")[0] + f"/{{{word}q.id}}"
        key += ".doc"
    elif kind == "fixed field":
        effect.update(op="set", doc="agents/{agent}", path="id", value="x")
    elif kind == "no rule allows":
        field = next(iter(tools[name].get("input", {}).get("properties", {"x": 0})))
        effect.update(op="delete", doc="channels/{input." + field + "}")
        effect.pop("path", None)
        effect.pop("value", None)
        effect.pop("when", None)
    elif kind == "incr not an integer":
        effect.update(op="incr", doc="agents/{agent}", path="karma", value=data.draw(st.sampled_from(["one", 1.5, [1], {"a": 1}])))
        key += ".value" if not isinstance(effect["value"], str) else ""
    elif kind == "create not an object":
        effect.update(op="create", doc="posts/{id}", value=data.draw(st.sampled_from([1, "x", [1]])))
        effect.pop("path", None)
        key += ".value"
    elif kind == "append without id":
        effect.update(op="append", doc="agents/{agent}", path="memory", value={"text": "x"})
        key += ".value"
    elif kind == "bad template":
        effect["doc"] = effect["doc"].split("/")[0] + "/" + data.draw(st.sampled_from(["{agent", "agent}", "{}", "{a b}", "{1x}"]))
        key += ".doc"
    elif kind == "not a schema":
        tools[name]["input"] = {"type": "object", "properties": {"x": {"type": word + "q"}}}
        key = f"{name}.input"
    elif kind == "input not an object":
        tools[name]["input"] = {"type": "string"}
        key = f"{name}.input"
    elif kind == "unknown key":
        tools[name][word + "_"] = 1
        key = name
    elif kind == "needs unknown collection":
        tools[name]["needs"] = {"thing": f"{word}x/{{agent}}"}
        key = f"{name}.needs.thing"
    elif kind == "actions name an undeclared tool":
        files = with_tools(tools)
        cfg = json.loads(files["state/config.json"])
        cfg["agents"]["basil"]["actions"] = ["post", word + "_tool"]
        files["state/config.json"] = json.dumps(cfg).encode()
        found = problems_with(files)
        assert found and found[0].startswith("state/config.json: agents.basil.actions: ") and word + "_tool" in found[0]
        return
    else:
        prompt = example_prompt()
        part = data.draw(st.sampled_from(["shared", "own"]))
        j = data.draw(st.integers(0, len(prompt[part]) - 1))
        section = prompt[part][j]
        file, key = PROMPT, f"{part}[{j}]"
        if kind == "prompt unknown collection":
            section.pop("doc", None)
            section.pop("list", None)
            section.pop("text", None)
            section.update(collection=word + "x", line="- {id}")
            key += ".collection"
        elif kind == "prompt line missing":
            section.pop("doc", None)
            section.pop("list", None)
            section.pop("line", None)
            section.pop("text", None)
            section.pop("where", None)  # (another collection's fields: a mistake of its own)
            section.pop("order", None)
            section["collection"] = "posts"
        else:
            section.pop("text", None)
            section.pop("where", None)
            section.pop("order", None)
            section.update(collection="posts", line="- {id", title=section.get("title", "t"))
            section.pop("doc", None)
            section.pop("list", None)
            key += ".line"
    found = problems_with(with_tools(tools, prompt))
    assert found, kind
    first = found[0]
    assert "\n" not in first and first.startswith(f"{file}: "), first
    assert f": {key}" in first, (key, first)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(decl=st.dictionaries(st.sampled_from(["post", "a", "do_nothing", "x-y", ""]), JSON, max_size=3)
       | st.dictionaries(st.sampled_from(["post"]), st.fixed_dictionaries(
           {"description": st.text(min_size=1, max_size=5), "effects": st.lists(st.dictionaries(
               st.sampled_from(["op", "doc", "path", "value", "when"]),
               JSON | st.sampled_from(["create", "posts/{id}", "agents/{agent}", "{input}", "incr", "score"]),
               max_size=5), min_size=1, max_size=3)},
           optional={"input": JSON, "needs": JSON, "absent": JSON, "check": JSON})))
def test_any_declaration_is_loaded_or_refused_in_lines_never_a_crash(decl: Any) -> None:
    found = problems_with(with_tools(decl))
    for line in found:
        assert "\n" not in line and line.split(": ", 1)[0] in (TOOLS, "state/config.json"), line


def test_validate_and_run_refuse_a_bad_world_before_any_tick(tmp_path: Path) -> None:
    fleet_cli(tmp_path, "init", "w")
    repo = tmp_path / "w"
    tools = json.loads((repo / TOOLS).read_bytes())
    tools["follow"]["effects"][0]["doc"] = "followers/{agent}--{input.agent}"
    (repo / TOOLS).write_bytes(canonical.dumps(tools))
    p = fleet_cli(repo, "validate")
    assert p.returncode == 1
    assert "state/tools.json: follow.effects[0].doc: unknown collection 'followers'" in p.stdout
    subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", "commit", "-qam", "a typo"], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "1")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("fleet: state/tools.json: follow.effects[0].doc: unknown collection")
    for command in (["plan"], ["work", "--worker", "1", "--workers", "1"]):  # a main someone pushed to directly
        p = fleet_cli(repo, *command, "--remote", repo.as_uri())
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert "state/tools.json: follow.effects[0].doc: unknown collection 'followers'" in p.stderr


# -- a world these tests never saw -------------------------------------------------------

def _id_schema() -> dict[str, Any]:
    return {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"}


def made_up_world(thing: str, place: str, count: str, note: str, agents: list[str]) -> dict[str, bytes]:
    """A world of two collections: places nobody owns, and things each agent owns in a place."""
    files = {p: d for p, d in example_files().items() if p.startswith("schemas/") and
             p.split("/")[1].split(".")[0] in ("config", "conflict", "delta", "fleet", "resolution", "task", "worker", "tools", "prompt")}
    files[f"schemas/{thing}.schema.json"] = json.dumps({
        "type": "object", "required": ["id", "owner", place], "additionalProperties": False,
        "properties": {"id": _id_schema(), "owner": _id_schema(), place: _id_schema(), note: {"type": "string", "maxLength": 200},
                       "tick": {"type": "integer"}}}).encode()
    files[f"schemas/{place}.schema.json"] = json.dumps({
        "type": "object", "required": ["id"], "additionalProperties": False,
        "properties": {"id": _id_schema(), count: {"type": "integer", "minimum": 0}}}).encode()
    files["state/config.json"] = canonical.dumps({
        "fleet": {"name": f"the {thing} world"},
        "agents": {a: {} for a in agents},
        "collections": {
            thing + "s": {"schema": f"{thing}.schema.json", "owner": "owner", "own": ["create", "set", "delete"], "fixed": [place]},
            place + "s": {"schema": f"{place}.schema.json", "owner": None, "others": [f"incr:{count}"]}},
        "policies": {"*": "lww"},
        "tools": [TOOLS], "prompt": PROMPT})
    files[TOOLS] = canonical.dumps({
        "make": {"description": f"Make a {thing} in a {place}.",
                 "input": {"type": "object", "required": [place, note], "additionalProperties": False,
                           "properties": {place: _id_schema(), note: {"type": "string", "minLength": 1, "maxLength": 200}}},
                 "needs": {"where": f"{place}s/{{input.{place}}}"},
                 "effects": [{"op": "create", "doc": f"{thing}s/{{id}}",
                              "value": {"owner": "{agent}", place: f"{{input.{place}}}", note: f"{{input.{note}}}", "tick": "{tick}"}},
                             {"op": "incr", "doc": f"{place}s/{{input.{place}}}", "path": count, "value": 1}]},
        "rename": {"description": f"Change the {note} of one of your {thing}s.",
                   "input": {"type": "object", "required": ["which", note], "additionalProperties": False,
                             "properties": {"which": _id_schema(), note: {"type": "string", "minLength": 1, "maxLength": 200}}},
                   "needs": {"it": f"{thing}s/{{input.which}}"},
                   "check": [["{it.owner}", "==", "{agent}"]],
                   "effects": [{"op": "set", "doc": f"{thing}s/{{input.which}}", "path": note, "value": f"{{input.{note}}}"}]}})
    files[PROMPT] = canonical.dumps({
        "rules": f"You live in {{fleet}}. Make {thing}s.",
        "shared": [{"title": f"{place}s:", "collection": f"{place}s", "order": ["id"], "line": f"- {{id}} ({{{count}}})"},
                   {"title": f"{thing}s:", "collection": f"{thing}s", "order": ["-tick", "id"], "line": f"- {{id}} by {{owner}}: {{{note}:80}}"}],
        "own": [{"title": f"Your {thing}s:", "collection": f"{thing}s", "where": {"owner": "{agent}"}, "line": "- {id}"}]})
    for p in ("p1", "p2"):
        files[f"state/{place}s/{p}.json"] = canonical.dumps({"id": p, count: 0})
    files["state/fleet.json"] = (REPO / "state" / "fleet.json").read_bytes()  # tick 0
    return files


def tick(snap: MemorySnapshot, agents: list[str], workers: int, seed: int = 0) -> tuple[MemorySnapshot, list[dict[str, Any]]]:
    """One tick in process: the offline provider's turns, spread over ``workers``, then the merge."""
    bodies: list[dict[str, Any]] = []
    for name, mine in assign(agents, workers).items():
        if mine:
            bodies += asyncio.run(run_turns(OfflineProvider(seed), snap, mine, tick=snap.tick + 1, worker=name, workers=workers))
    arrivals = [Arrival(f"refs/heads/fleet/t{b['tick']}/{b['worker']}", file_path(b), canonical.dumps(b)) for b in bodies]
    result = merge_tick(snap, arrivals)
    return snap.after(result.writes, result.deletes), bodies


WORD = st.from_regex(r"\A[a-z]{3,9}\Z")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(WORD, min_size=4, max_size=4, unique=True).filter(
    lambda n: not any(a.startswith(b) or b.startswith(a) for a in n for b in n if a != b)
    and all(x not in ("owner", "tick", "which", "where", "input", "agent") for x in n)),
    seed=st.integers(0, 1000))
def test_a_world_made_up_here_runs_with_agents_acting_on_its_own_collections(names: list[str], seed: int) -> None:
    thing, place, count, note = names
    agents = ["ann", "bob", "cyd"]
    snap = MemorySnapshot(made_up_world(thing, place, count, note, agents))
    assert world.check(snap.config, snap.read)[1] == []
    made = 0
    for _ in range(3):
        snap, bodies = tick(snap, agents, 2, seed)
        for b in bodies:
            assert "error" not in b["meta"], b["meta"]
            assert {o["collection"] for o in b["ops"]} <= {thing + "s", place + "s"}
    made = len([p for p in snap.paths() if p.startswith(f"state/{thing}s/")])
    assert made > 0
    counted = sum(json.loads(snap.read(f"state/{place}s/{p}.json") or b"{}")[count] for p in ("p1", "p2"))
    assert counted == made  # each create bumped its place's counter, exactly once


# -- the same choices whatever the number of workers ----------------------------------------

def _what(b: dict[str, Any]) -> tuple[Any, ...]:
    meta = {k: v for k, v in b["meta"].items() if k != "usage"}
    return (b["agent"], json.dumps(b["ops"], sort_keys=True), json.dumps(meta, sort_keys=True))


@pytest.mark.parametrize("seed", range(6))
def test_an_agent_chooses_the_same_alone_or_beside_five_peers(seed: int) -> None:
    snap = MemorySnapshot(example_files())
    agents = roster(snap.config.agents)
    for _ in range(2):  # the second tick starts from a world the first one changed
        after_one, one = tick(snap, agents, 1, seed)
        after_six, six = tick(snap, agents, 6, seed)
        assert sorted(map(_what, one)) == sorted(map(_what, six))
        assert sum(len(b["ops"]) for b in one) > 0
        snap = after_one


def test_one_and_six_worker_processes_write_the_same_deltas(tmp_path: Path) -> None:
    """As a user runs it: `fleet run` with 1 worker and with 6, the ledgers hold the same ops per agent."""
    out = []
    for workers in (1, 6):
        repo = tmp_path / f"w{workers}"
        fleet_cli(tmp_path, "init", repo.name)
        p = fleet_cli(repo, "run", "--ticks", "2", "--workers", str(workers), "--provider", "offline")
        assert p.returncode == 0, p.stderr
        origin = repo / ".git" / "fleet" / "origin.git"
        lines: list[tuple[Any, ...]] = []
        for t in (1, 2):
            files = subprocess.run(["git", "--git-dir", str(origin), "ls-tree", "-r", "--name-only", "main", f"state/ledger/{t}/"],
                                   capture_output=True, text=True, check=True).stdout.split()
            for f in files:
                text = subprocess.run(["git", "--git-dir", str(origin), "show", f"main:{f}"], capture_output=True,
                                      text=True, check=True).stdout
                lines += [(t, *_what(json.loads(line))) for line in text.splitlines()]
        out.append(sorted(lines))
    assert out[0] == out[1] and len(out[0]) == 12


# -- no world in fleet's code ----------------------------------------------------------------

FLEET_WORDS = {"agents", "tasks"}  # fleet's own vocabulary (config keys), whatever a world calls its collections


def example_collections() -> set[str]:
    configs = [REPO / "state" / "config.json", *(REPO / "fleet" / "examples").glob("*/state/config.json")]
    return {c for p in configs for c in json.loads(p.read_bytes())["collections"]} - FLEET_WORDS


def test_fleets_code_names_no_collection_of_any_example() -> None:
    names = example_collections()
    assert {"posts", "follows"} <= names
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names))) + r")\b")
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}"
             for p in sorted((REPO / "fleet").rglob("*.py")) if "examples" not in p.parts
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_default_prompt_of_a_world_that_declares_none_shows_its_collections() -> None:
    files = example_files()
    cfg = json.loads(files["state/config.json"])
    del cfg["prompt"]
    files["state/config.json"] = json.dumps(cfg).encode()
    snap = MemorySnapshot(files)
    w = world.load(snap.config, snap.read)
    from fleet.prompt import PromptBuilder
    from fleet.world import View
    b = PromptBuilder(View(snap, tick=1), w.prompt, 6000, snap.config.name)
    assert "channels:" in b.common and "general" in b.common
    own = b.for_agent("ada").system[1]["text"]
    assert own.startswith("You are ada.") and "Ada is a systems programmer" in own


def test_an_agent_offered_a_tool_its_rules_never_allow_is_refused_by_name() -> None:
    files = example_files()
    tools = example_tools()
    tools["describe"] = {"description": "Describe a channel.",
                         "input": {"type": "object", "required": ["channel", "text"],
                                   "properties": {"channel": {"type": "string"}, "text": {"type": "string"}}},
                         "effects": [{"op": "set", "doc": "channels/{input.channel}", "path": "description", "value": "{input.text}"}]}
    files[TOOLS] = json.dumps(tools).encode()
    cfg = json.loads(files["state/config.json"])
    for aid in cfg["agents"]:
        if aid != "ada":
            cfg["agents"][aid]["actions"] = ["post", "comment"]
    cfg["agents"]["basil"]["actions"].append("describe")  # no grant: every call would be quarantined
    cfg["agents"]["ada"].setdefault("grants", {})["channels"] = ["set:description"]  # ada has every tool, and the grant
    files["state/config.json"] = json.dumps(cfg).encode()
    found = problems_with(files)
    assert len(found) == 1, found
    assert found[0].startswith("state/config.json: agents.basil.actions: basil has tool 'describe', whose effect "
                               "set channels description")
    cfg["agents"]["basil"]["grants"] = {"channels": ["set:description"]}
    files["state/config.json"] = json.dumps(cfg).encode()
    assert problems_with(files) == []


def test_in_a_condition_a_missing_field_is_null() -> None:
    from fleet.refs import Scope, compile_value
    from fleet.world import Condition
    c = Condition(compile_value("{doc.assignee}"), "in", compile_value([None, "{agent}"]), "")
    assert c.holds(Scope({"doc": {}, "agent": "ada"}))
    assert c.holds(Scope({"doc": {"assignee": "ada"}, "agent": "ada"}))
    assert not c.holds(Scope({"doc": {"assignee": "bob"}, "agent": "ada"}))


# -- what a new user's review found: each a class of mistake, one line each ---------------

def _tools_with(name: str, change: Any) -> dict[str, bytes]:
    tools = example_tools()
    change(tools[name])
    return with_tools(tools)


@pytest.mark.parametrize("name, change, key, words", [
    ("post", lambda t: t.update(max=0), "post.max", "minimum"),
    ("post", lambda t: t.update(effect=[]), "post", "effect"),
    ("post", lambda t: t["effects"][0]["value"].update(title="{input.title"), "post.effects[0].value", "unmatched"),
    ("post", lambda t: t["effects"][0].update(doc="posts/../{id}"), "post.effects[0].doc", "no '..'"),
    ("post", lambda t: t["effects"][0].update(doc="posts/a/{id}"), "post.effects[0].doc", "no '/'"),
    ("comment", lambda t: t["effects"][1].update(value="{input.body}"), "comment.effects[1].value", "not an integer"),
    ("remember", lambda t: t["effects"][0]["value"].update(text=json.loads("[" * 14 + "1" + "]" * 14)),
     "remember.effects[0].value", "deeper than 12"),
    ("comment", lambda t: t["effects"][0]["value"].update(body="{post.titel}"), "comment.effects[0].value",
     "'titel' is not a field of posts documents"),
    ("follow", lambda t: t.update(check=[["{other.nme}", "!=", "{agent}"]]), "follow.check[0]",
     "'nme' is not a field of agents documents"),
])
def test_a_mistake_in_one_tool_is_one_line_and_the_others_still_load(name: str, change: Any, key: str, words: str) -> None:
    found = problems_with(_tools_with(name, change))
    assert len(found) == 1, found  # no line that only follows from it (an action naming the broken tool, say)
    assert found[0].startswith(f"{TOOLS}: {key}") and words in found[0], found


@pytest.mark.parametrize("part, section, words", [
    ("own", {"text": "You are {agnet}."}, "'agnet' is not one of"),
    ("own", {"title": "t", "collection": "posts", "where": {"author": "{agnet}"}, "line": "- {id}"}, "'agnet'"),
    ("shared", {"title": "t", "collection": "posts", "line": "- {id} by {agent}"}, "only an agent's own sections"),
    ("shared", {"title": "t", "collection": "posts", "line": "- {titel}"}, "not a field of posts documents"),
    ("own", {"doc": "agents/{agent}", "list": "memory", "line": "- {txt}"}, "not a field of agents documents"),
    ("shared", {"title": "t", "collection": "posts", "order": ["-tik", "id"], "line": "- {id}"}, "'tik' is not a field"),
    ("shared", {"title": "t", "collection": "posts", "where": {"autor": "x"}, "line": "- {id}"},
     "where.autor: not a field of posts"),
])
def test_a_prompt_template_naming_nothing_is_refused(part: str, section: dict[str, Any], words: str) -> None:
    prompt = example_prompt()
    prompt[part].append(section)
    found = problems_with(with_tools(example_tools(), prompt))
    assert len(found) == 1 and found[0].startswith(f"{PROMPT}: {part}[{len(prompt[part]) - 1}]") and words in found[0], found


def test_declaration_files_live_directly_in_state_and_schemas_must_exist() -> None:
    files = example_files()
    cfg = json.loads(files["state/config.json"])
    cfg["tools"] = ["state/world/tools.json"]
    files["state/world/tools.json"] = files[TOOLS]
    files["state/config.json"] = json.dumps(cfg).encode()
    with pytest.raises(FleetError, match=r"^state/config.json: at /tools/0: \"state/world/tools.json\" does not match"):
        problems_with(files)  # the config's own schema says where declaration files live
    files = example_files()
    del files["schemas/reaction.schema.json"]
    found = problems_with(files)
    assert found[0] == "state/config.json: collections.reactions.schema: names schemas/reaction.schema.json, which is missing or not a regular file"


def test_a_prompt_section_can_select_by_null_true_or_a_number_first() -> None:
    from fleet.prompt import PromptBuilder
    from fleet.world import View
    files = example_files()
    prompt = example_prompt()
    prompt["shared"] = [{"title": "Unscored:", "collection": "posts", "where": {"bio": None}, "line": "- {id}"},
                        {"title": "Zero:", "collection": "posts", "where": {"score": 0}, "line": "- {id}"},
                        {"title": "Never:", "collection": "posts", "where": {"score": False}, "line": "- {id}"}]
    files[PROMPT] = json.dumps(prompt).encode()
    schema = json.loads(files["schemas/post.schema.json"])
    schema["properties"]["bio"] = {"type": "string"}  # a field the schema allows and no post holds
    files["schemas/post.schema.json"] = json.dumps(schema).encode()
    snap = MemorySnapshot(files)
    w = world.load(snap.config, snap.read)
    common = PromptBuilder(View(snap, tick=1), w.prompt, 6000).common
    assert "Unscored:\n- ada-1\n- cleo-1" in common and "Zero:\n- ada-1\n- cleo-1" in common and "Never:" not in common


def test_the_offline_provider_makes_do_with_a_schema_that_asks_for_too_much() -> None:
    tools = example_tools()
    tools["post"]["input"]["properties"]["tags"].update(minItems=100_000_000, maxItems=100_000_001)
    tools["post"]["input"]["properties"]["title"].update(minLength=1_000_000_000, maxLength=2_000_000_000)
    tools["post"]["input"]["required"] += ["tags"]
    snap = MemorySnapshot(with_tools(tools))
    for _ in range(2):  # finishes, in bounded memory: the calls may be rejected, the turns are not lost
        snap, bodies = tick(snap, ["ada", "basil", "cleo"], 1)
        assert all("error" not in b["meta"] for b in bodies)
