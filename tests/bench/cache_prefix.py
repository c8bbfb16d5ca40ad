"""cache-prefix: how much of each prompt the model provider reads from its cache.

The example world is run for 25 ticks on the offline provider (so it has
posts, comments and memories to talk about), then one tick's turns go to a
local Messages API that caches prefixes as the real one does: an entry is
written by the first request that carries it, readable once that response
has gone out, and only if the prefix is at least ``--min-cache-tokens`` long
(2,048 is the real minimum for Sonnet 4.6). From the second agent of the tick
on, the share of prompt tokens before the cache breakpoint is what the cache
serves. Reported as cost: ours is the prompt tokens per turn that are *not*
read from the cache, the floor is all prompt tokens per turn (no caching), so
the ratio is one minus the share; the goal, a share of at least 70%, is a
ratio of at most 0.30.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib import log, result, workdir

from fleet.commands.init import init
from fleet.git import Git
from fleet.providers.anthropic import AnthropicProvider
from fleet.state import GitSnapshot
from fleet.streams import run_turns

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.servers.anthropic_api import AnthropicAPI  # noqa: E402

KEY = "sk-bench-not-a-real-key"


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--ticks", type=int, default=25, help="offline ticks that build the world first (default 25)")
    p.add_argument("--min-cache-tokens", type=int, default=2048, help="shortest cacheable prefix (default 2048)")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with workdir(args.tmp, "fleet-bench-cache-", args.keep) as tmp:
        repo = tmp / "fleet"
        init(repo)
        log(f"running {args.ticks} offline ticks to give the world some history")
        p = subprocess.run([sys.executable, "-m", "fleet", "run", "--ticks", str(args.ticks), "--workers", "2"],
                           cwd=repo, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"fleet run failed: {p.stderr.strip()}")
        origin = Git(repo / ".git" / "fleet" / "origin.git")
        snap = GitSnapshot(origin, origin.rev_parse("refs/heads/main") or "")
        agents = sorted(snap.config.agents)
        with AnthropicAPI(min_cache_tokens=args.min_cache_tokens, latency=0.05) as api:
            provider = AnthropicProvider(snap.config, api_key=KEY, base_url=api.url)

            async def go() -> list[dict[str, Any]]:
                try:
                    return await run_turns(provider, snap, agents, tick=snap.tick + 1, worker="w1")
                finally:
                    await provider.aclose()

            bodies = asyncio.run(go())
            seen = sorted(api.requests, key=lambda s: s.arrival)
    usage = {b["agent"]: b["meta"]["usage"] for b in bodies if "usage" in b["meta"]}
    later = [usage[s.agent] for s in seen[1:]]  # from the second agent of the tick on
    total = [u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"] for u in later]
    uncached = [u["input_tokens"] + u["cache_creation_input_tokens"] for u in later]
    shares = [1 - x / t for x, t in zip(uncached, total)]
    log(f"{len(later)} prompts after the first: share read from cache min {min(shares):.3f}, "
        f"mean {statistics.mean(shares):.3f}; prompt tokens per turn {statistics.mean(total):.0f}")
    return [result("cache-prefix", statistics.mean(uncached), statistics.mean(total), "prompt tokens per turn",
                   goal=0.30, share_mean=round(statistics.mean(shares), 3), share_min=round(min(shares), 3),
                   share_goal=0.70, agents=len(agents), world_ticks=args.ticks,
                   min_cache_tokens=args.min_cache_tokens,
                   first_turn_cache_write=usage[seen[0].agent]["cache_creation_input_tokens"])]
