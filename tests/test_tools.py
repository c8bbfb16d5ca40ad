"""Tools (fleet/tools.py, declared by the world): calls become the caller's ops, or are rejected with a reason."""

from __future__ import annotations

from pathlib import Path

from fleet import world as world_mod
from fleet.state import MemorySnapshot
from fleet.tools import ToolCall, to_ops
from fleet.world import NOOP, View

REPO = Path(__file__).resolve().parents[1]


def example() -> MemorySnapshot:
    """The default example world, from this repository's own files."""
    files = {p.relative_to(REPO).as_posix(): p.read_bytes()
             for folder in ("state", "schemas") for p in (REPO / folder).rglob("*.json")}
    return MemorySnapshot(files)


def convert(agent: str, calls: list[ToolCall], only: tuple[str, ...] | None = None, tick: int = 2):
    snap = example()
    w = world_mod.load(snap.config, snap.read)
    tools = w.tools_of(snap.config, agent) if only is None else {n: w.tools[n] for n in only}
    return to_ops(agent, tick, calls, View(snap, tick=tick), tools, set(w.tools))


def test_a_call_acts_for_its_caller_only() -> None:
    conv = convert("ada", [ToolCall("update_bio", {"bio": "hi", "agent": "basil"})])
    assert conv.ops == [] and "input does not match" in conv.rejected[0]["reason"]
    conv = convert("ada", [ToolCall("update_bio", {"bio": "hi"})])
    assert [(o.op, o.collection, o.id, o.arg) for o in conv.ops] == [("set", "agents", "ada", "hi")]


def test_actions_the_agent_lacks_and_unknown_tools_are_rejected_and_noop_says_why() -> None:
    calls = [ToolCall("post", {"channel": "general", "title": "t", "body": "b"}), ToolCall("nope", {}),
             ToolCall(NOOP, {"reason": "thinking"})]
    conv = convert("ada", calls, only=("comment",))
    assert conv.ops == [] and [r["tool"] for r in conv.rejected] == ["post", "nope"]
    assert "not among this agent's actions" in conv.rejected[0]["reason"]
    assert "unknown tool" in conv.rejected[1]["reason"] and conv.noop == "thinking"


def test_a_follow_refuses_doubles_and_oneself_within_a_turn() -> None:
    conv = convert("ada", [ToolCall("follow", {"agent": "basil"})] * 2 + [ToolCall("follow", {"agent": "ada"})])
    assert [(o.op, o.id) for o in conv.ops] == [("create", "ada--basil")]
    assert "exists already" in conv.rejected[0]["reason"] and "!=" in conv.rejected[1]["reason"]
    conv = convert("basil", [ToolCall("follow", {"agent": "cleo"})])  # basil--cleo is on main already
    assert conv.ops == [] and "exists already" in conv.rejected[0]["reason"]
    conv = convert("ada", [ToolCall("follow", {"agent": "nobody"})])
    assert conv.ops == [] and "no agents document 'nobody'" in conv.rejected[0]["reason"]


def test_a_reaction_bumps_score_and_the_authors_karma_but_not_ones_own() -> None:
    conv = convert("ada", [ToolCall("react", {"post": "cleo-1", "kind": "like"})])
    assert [(o.op, o.collection, o.id, o.path) for o in conv.ops] == [
        ("create", "reactions", "ada-cleo-1-like", ()), ("incr", "posts", "cleo-1", ("score",)),
        ("incr", "agents", "cleo", ("karma",))]
    conv = convert("ada", [ToolCall("react", {"post": "ada-1", "kind": "insight"})])
    assert [(o.collection, o.path) for o in conv.ops] == [("reactions", ()), ("posts", ("score",))]
    conv = convert("ada", [ToolCall("react", {"post": "cleo-1", "kind": "disagree"})])
    assert [o.collection for o in conv.ops] == ["reactions"]


def test_a_post_made_in_a_turn_can_be_commented_later_in_that_turn() -> None:
    conv = convert("ada", [ToolCall("post", {"channel": "general", "title": "t", "body": "b"}),
                           ToolCall("comment", {"post": "ada-t2-1", "body": "and more"})])
    assert [(o.op, o.collection, o.id) for o in conv.ops] == [
        ("create", "posts", "ada-t2-1"), ("incr", "channels", "general"), ("incr", "agents", "ada"),
        ("create", "comments", "ada-t2-2"), ("incr", "posts", "ada-t2-1")]
    post = conv.ops[0].arg
    assert post["author"] == "ada" and post["tick"] == 2 and post["tags"] == [] and post["id"] == "ada-t2-1"


def test_a_note_is_appended_to_ones_own_memory() -> None:
    conv = convert("basil", [ToolCall("remember", {"text": "water the tests"})], tick=7)
    assert [(o.op, o.id, o.path, o.arg) for o in conv.ops] == [
        ("append", "basil", ("memory",), {"id": "m7-1", "tick": 7, "text": "water the tests"})]


def test_a_tools_max_caps_its_calls_in_one_turn() -> None:
    from fleet.tools import to_ops as run
    snap = example()
    w = world_mod.load(snap.config, snap.read)
    import dataclasses
    tools = {"remember": dataclasses.replace(w.tools["remember"], max=2)}
    conv = run("ada", 2, [ToolCall("remember", {"text": f"n{i}"}) for i in range(4)], View(snap, tick=2), tools, set(w.tools))
    assert len(conv.ops) == 2 and len(conv.rejected) == 2 and "at most 2" in conv.rejected[0]["reason"]


def test_a_preview_rejects_what_to_ops_rejects_and_sees_the_turns_own_work() -> None:
    """What the offline provider tries a call with before it sends it."""
    from fleet.tools import Preview

    snap = example()
    w = world_mod.load(snap.config, snap.read)
    preview = Preview(View(snap, tick=2))
    follow = w.tools["follow"]
    assert preview.why_not("ada", 2, 1, ToolCall("follow", {"agent": "basil"}), follow) is None
    again = preview.why_not("ada", 2, 2, ToolCall("follow", {"agent": "basil"}), follow)
    assert again is not None and "exists already" in again  # the first call counts as made
    assert "!=" in (preview.why_not("ada", 2, 3, ToolCall("follow", {"agent": "ada"}), follow) or "")
    assert "input does not match" in (preview.why_not("ada", 2, 4, ToolCall("follow", {}), follow) or "")
    assert preview.why_not("ada", 2, 5, ToolCall(NOOP, {"reason": "r"}), None) is None


def test_a_whole_number_a_model_writes_as_a_float_reaches_the_delta_as_a_whole_number() -> None:
    """A schema's "integer" takes 2.0 (JSON Schema counts it whole): a model's 2.0 became
    an incr by 2.0, and a world's whole-number counter 7.0 for good. Every whole float
    of a tool's input (at any depth, -0.0 too) is the whole number; others stay floats."""
    import json

    from hypothesis import given
    from hypothesis import strategies as st

    snap = example()
    tools = json.loads(snap.files["state/tools.json"])
    tools["bump"] = {
        "description": "Raise a post's score.",
        "input": {"type": "object", "additionalProperties": False, "required": ["post", "by"],
                  "properties": {"post": {"type": "string"}, "by": {"type": "integer", "minimum": -5, "maximum": 5}}},
        "needs": {"post": "posts/{input.post}"},
        "effects": [{"op": "incr", "doc": "posts/{input.post}", "path": "score", "value": "{input.by}"}],
    }
    snap.files["state/tools.json"] = json.dumps(tools).encode()
    w = world_mod.load(snap.config, snap.read)

    @given(by=st.integers(-5, 5).map(float) | st.sampled_from([-0.0, 2.0]))
    def check(by: float) -> None:
        conv = to_ops("ada", 2, [ToolCall("bump", {"post": "cleo-1", "by": by})], View(snap, tick=2),
                      {"bump": w.tools["bump"]}, set(w.tools))
        [op] = conv.ops
        assert type(op.arg) is int and op.arg == by, (op, conv.rejected)

    check()
    from fleet.tools import whole_numbers

    assert whole_numbers({"a": [1.0, 1.5, {"b": -0.0}], "c": 2.0**60, "d": True}) == {
        "a": [1, 1.5, {"b": 0}], "c": 2.0**60, "d": True}
    assert type(whole_numbers(2.0**60)) is float


def test_a_call_the_merge_would_refuse_for_authority_is_rejected_alone_not_the_whole_turn() -> None:
    """A tool that lets the model name a document's owner (a post "by" another agent): the
    merge refuses that create, and quarantined the whole delta, the turn's valid calls with
    it. The worker rejects that call alone, with the merge's reason; the others stand."""
    import json

    from hypothesis import given
    from hypothesis import strategies as st

    snap = example()
    tools = json.loads(snap.files["state/tools.json"])
    post = json.loads(json.dumps(tools["post"]))
    post["input"]["properties"]["author"] = {"type": "string"}
    post["input"]["required"].append("author")
    post["effects"][0]["value"]["author"] = "{input.author}"
    tools["post_as"] = post
    snap.files["state/tools.json"] = json.dumps(tools).encode()
    w = world_mod.load(snap.config, snap.read)
    agents = sorted(snap.config.agents)

    @given(author=st.sampled_from(agents), agent=st.sampled_from(agents))
    def check(author: str, agent: str) -> None:
        calls = [ToolCall("post_as", {"channel": "general", "title": "t", "body": "b", "author": author}),
                 ToolCall("update_bio", {"bio": "still here"})]
        conv = to_ops(agent, 2, calls, View(snap, tick=2), {n: w.tools[n] for n in ("post_as", "update_bio")},
                      set(w.tools))
        assert ("set", "agents", agent) in [(o.op, o.collection, o.id) for o in conv.ops]  # the valid call stands
        created = [o for o in conv.ops if o.op == "create"]
        if author == agent:
            assert len(created) == 1 and not conv.rejected
        else:
            assert created == [] and f"agent {agent} may not create posts/" in conv.rejected[0]["reason"]

    check()


def test_a_delete_of_ones_own_document_passes_the_workers_authority_check() -> None:
    """The worker's check read a document its call deletes as already gone (no owner), so
    every delete of one's own document was rejected before it reached the merge."""
    root = REPO / "fleet" / "examples" / "tickets"
    snap = MemorySnapshot({p.relative_to(root).as_posix(): p.read_bytes()
                           for folder in ("state", "schemas") for p in (root / folder).rglob("*.json")})
    w = world_mod.load(snap.config, snap.read)
    conv = to_ops("ravi", 2, [ToolCall("retract_comment", {"comment": "ravi-c1"})], View(snap, tick=2),
                  {"retract_comment": w.tools["retract_comment"]}, set(w.tools))
    assert [(o.op, o.collection, o.id) for o in conv.ops] == [("delete", "comments", "ravi-c1")], conv.rejected
    conv = to_ops("quinn", 2, [ToolCall("retract_comment", {"comment": "ravi-c1"})], View(snap, tick=2),
                  {"retract_comment": w.tools["retract_comment"]}, set(w.tools))
    assert conv.ops == [] and conv.rejected  # not one's own: the tool's check says so first
