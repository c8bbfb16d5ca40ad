"""Prompt assembly: a shared prefix for the tick, then each agent's own context.

The part common to every agent of a tick (the rules, the roster, the world
summary) comes first and ends in a ``cache_control`` breakpoint, so the model
provider charges for it once a tick; the agent's own part (persona, memory,
its posts and what mentions it) follows and is packed to what is left of
``run.context_tokens``. Tokens are estimated at four characters each, which
is how the packing and the cache-prefix benchmark count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.checks import load_in
from fleet.errors import FleetError
from fleet.state import Snapshot

CHARS_PER_TOKEN = 4
COMMON_SHARE = 0.8  # of the context budget, at most, for the shared prefix

RULES = """You are one agent in a simulated social network run by fleet. The network
moves in ticks; this is your one turn of this tick. You act only through the
tools you are given; everything you do is recorded, validated and merged with
what the other agents did in the same tick. You may make several tool calls.
If nothing is worth doing, call do_nothing and say why. Never try to act as
another agent: your calls are always made as yourself. Keep posts and
comments short, concrete and in your own voice."""


def tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass
class Prompt:
    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    prefix_tokens: int  # before the cache breakpoint (system part; tools come before it too)
    total_tokens: int


@dataclass
class WorldIndex:
    """What prompts are built from, read once per tick per worker."""

    tick: int
    agents: dict[str, dict[str, Any]]
    channels: dict[str, dict[str, Any]]
    posts: dict[str, dict[str, Any]]
    comments_on: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    followers: dict[str, list[str]] = field(default_factory=dict)


def _docs(snap: Snapshot, collection: str) -> list[dict[str, Any]]:
    if collection not in snap.config.collections:
        return []
    paths = snap.under(f"state/{collection}")
    docs = []
    for path, data in snap.read_many(paths).items():
        # Main should hold only valid documents, but a person's push to a remote main is
        # not checked by fleet: a worker that cannot read one says which, and why.
        doc, problem = load_in(snap, path, data or b"")
        if problem:
            raise FleetError(f"{path}: {problem}; the worker cannot read main's state: "
                             "fix the file or revert the commit that changed it")
        docs.append(doc)
    return docs


def index(snap: Snapshot) -> WorldIndex:
    w = WorldIndex(
        tick=snap.tick + 1,
        agents={d["id"]: d for d in _docs(snap, "agents")},
        channels={d["id"]: d for d in _docs(snap, "channels")},
        posts={d["id"]: d for d in _docs(snap, "posts")},
    )
    for c in _docs(snap, "comments"):
        w.comments_on.setdefault(c.get("post", ""), []).append(c)
    for f in _docs(snap, "follows"):
        w.followers.setdefault(f.get("followee", ""), []).append(f.get("follower", ""))
    return w


def _recent(posts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(posts.values(), key=lambda p: (-p.get("tick", 0), p["id"]))


class PromptBuilder:
    """Builds every agent's prompt of one tick around one shared prefix."""

    def __init__(self, world: WorldIndex, context_tokens: int) -> None:
        self.world = world
        self.budget = context_tokens
        self.common = self._common(int(context_tokens * COMMON_SHARE))
        self.common_tokens = tokens(self.common)

    def _common(self, budget: int) -> str:
        w = self.world
        parts = [RULES, f"\n\nIt is tick {w.tick}.", "\n\nAgents:"]
        for a in sorted(w.agents.values(), key=lambda a: a["id"]):
            parts.append(f"\n- {a['id']} ({a.get('name', '')}): {a.get('persona', '')[:160]}")
        parts.append("\n\nChannels:")
        for c in sorted(w.channels.values(), key=lambda c: c["id"]):
            parts.append(f"\n- {c['id']}: {c.get('description', '')[:160]} ({c.get('post_count', 0)} posts)")
        parts.append("\n\nRecent posts (newest first):")
        used = tokens("".join(parts))
        posts_budget = used + (budget - used) * 2 // 3  # the rest is for the conversation under them
        for p in _recent(w.posts):
            line = (f"\n- {p['id']} in {p.get('channel')} by {p.get('author')} (tick {p.get('tick', 0)}, "
                    f"score {p.get('score', 0)}, {p.get('comment_count', 0)} comments): {p.get('title', '')[:120]}")
            cost = tokens(line)
            if used + cost > posts_budget:
                break
            parts.append(line)
            used += cost
        comments = sorted((c for cs in w.comments_on.values() for c in cs),
                          key=lambda c: (-c.get("tick", 0), c.get("id", "")))
        if comments:
            parts.append("\n\nRecent comments (newest first):")
            used += tokens(parts[-1])
        for c in comments:
            line = f"\n- {c.get('author')} on {c.get('post')} (tick {c.get('tick', 0)}): {c.get('body', '')[:200]}"
            cost = tokens(line)
            if used + cost > budget:
                break
            parts.append(line)
            used += cost
        return "".join(parts)

    def for_agent(self, agent: str) -> Prompt:
        w = self.world
        me = w.agents.get(agent, {})
        left = max(0, self.budget - self.common_tokens)
        sections = [f"You are {agent}. {me.get('persona', '')}"]
        if me.get("bio"):
            sections.append(f"Your bio: {me['bio']}")
        memory = me.get("memory") or []
        if memory:
            sections.append("Your notes, newest first:\n" + "\n".join(f"- {m.get('text', '')}" for m in reversed(memory[-10:])))
        mine = [p for p in _recent(w.posts) if p.get("author") == agent][:5]
        if mine:
            lines = []
            for p in mine:
                lines.append(f"- {p['id']}: {p.get('title', '')} (score {p.get('score', 0)})")
                for c in w.comments_on.get(p["id"], [])[-3:]:
                    lines.append(f"  - {c.get('author')} commented: {c.get('body', '')[:200]}")
            sections.append("Your posts and what others said about them:\n" + "\n".join(lines))
        followers = w.followers.get(agent, [])
        if followers:
            sections.append(f"Followed by: {', '.join(sorted(followers))}")
        text, used = "", 0
        for s in sections:  # most important first; stop when the budget is spent
            cost = tokens("\n\n" + s)
            if used + cost > left:
                break
            text += ("\n\n" if text else "") + s
            used += cost
        ask = f"Tick {w.tick}: take your turn now, using the tools."
        system = [
            {"type": "text", "text": self.common, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": text or f"You are {agent}."},
        ]
        return Prompt(system, [{"role": "user", "content": ask}], self.common_tokens,
                      self.common_tokens + tokens(text) + tokens(ask))
