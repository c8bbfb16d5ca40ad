"""Tools (fleet/tools.py): calls become the caller's ops, or are rejected with a reason."""

from __future__ import annotations

from fleet.tools import NOOP, ToolCall, World, to_ops


def world() -> World:
    return World({"ada", "basil"}, {"general"}, {"basil-1": "basil"})


def test_a_call_acts_for_its_caller_only() -> None:
    conv = to_ops("ada", 2, [ToolCall("update_bio", {"bio": "hi", "agent": "basil"})], world())
    assert conv.ops == [] and "input does not match" in conv.rejected[0]["reason"]
    conv = to_ops("ada", 2, [ToolCall("update_bio", {"bio": "hi"})], world())
    assert [(o.op, o.collection, o.id) for o in conv.ops] == [("set", "agents", "ada")]


def test_actions_the_agent_lacks_and_unknown_tools_are_rejected_and_noop_says_why() -> None:
    calls = [ToolCall("post", {"channel": "general", "title": "t", "body": "b"}), ToolCall("nope", {}),
             ToolCall(NOOP, {"reason": "thinking"})]
    conv = to_ops("ada", 2, calls, world(), allowed=("comment",))
    assert conv.ops == [] and [r["tool"] for r in conv.rejected] == ["post", "nope"]
    assert "not among this agent's actions" in conv.rejected[0]["reason"] and conv.noop == "thinking"


def test_a_follow_refuses_doubles_within_a_turn() -> None:
    conv = to_ops("ada", 2, [ToolCall("follow", {"agent": "basil"})] * 2, world())
    assert len(conv.ops) == 1 and "already following" in conv.rejected[0]["reason"]
