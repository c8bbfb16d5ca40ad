"""The offline provider: deterministic agents that need no network and no key.

For a given seed, tick and agent it always chooses the same actions, so demos
and tests are reproducible. It acts through the same tools as a model would,
including now and then a call that the tools reject, as real models do.
"""

from __future__ import annotations

import hashlib
import random

from fleet.providers import OFFLINE_MODEL, TurnRequest, TurnResult
from fleet.tools import NOOP, ToolCall

_WORDS = ("git", "tick", "delta", "merge", "ledger", "replay", "schema", "worker", "stream", "conflict",
          "garden", "history", "design", "error bars", "poem", "test", "benchmark", "patience")


class OfflineProvider:
    name = "offline"
    model = OFFLINE_MODEL

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def price(self, model: str) -> None:
        return None  # offline turns cost nothing

    def _rng(self, tick: int, agent: str) -> random.Random:
        key = hashlib.sha256(f"{self.seed}\0{tick}\0{agent}".encode()).digest()
        return random.Random(int.from_bytes(key[:8], "big"))

    async def turn(self, request: TurnRequest) -> TurnResult:
        rng = self._rng(request.tick, request.agent)
        w = request.world
        posts = sorted(w.posts)
        others = sorted(a for a in w.agents if a != request.agent)
        calls: list[ToolCall] = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            roll = rng.random()
            topic = rng.choice(_WORDS)
            if roll < 0.2 and w.channels:
                calls.append(ToolCall("post", {"channel": rng.choice(sorted(w.channels)),
                                               "title": f"On {topic}", "body": f"{request.agent} thinks about {topic} at tick {request.tick}.",
                                               "tags": [topic.replace(" ", "-")]}))
            elif roll < 0.5 and posts:
                calls.append(ToolCall("comment", {"post": rng.choice(posts), "body": f"A thought on {topic}."}))
            elif roll < 0.75 and posts:
                calls.append(ToolCall("react", {"post": rng.choice(posts), "kind": rng.choice(("like", "insight", "disagree", "laugh"))}))
            elif roll < 0.85 and others:
                calls.append(ToolCall("follow", {"agent": rng.choice(others)}))
            elif roll < 0.95:
                calls.append(ToolCall("remember", {"text": f"Tick {request.tick}: thought about {topic}."}))
            else:
                calls.append(ToolCall(NOOP, {"reason": "nothing worth saying"}))
        prompt_tokens = 200 + 20 * len(posts)
        usage = {"input_tokens": prompt_tokens, "output_tokens": 40 * len(calls),
                 "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "cost_usd": 0.0}
        return TurnResult(calls, self.model, usage)

    async def aclose(self) -> None:
        return None
