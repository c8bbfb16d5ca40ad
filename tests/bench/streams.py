"""streams: 500 agent turns against a local Messages API with 1 s latency per call.

Ours: fleet's ``run_turns`` with the Anthropic provider (the official SDK):
prompt assembly, the turn, tool calls to ops, one delta per turn, budgets,
at a concurrency of 250. Floor, in the same run: the same number of bare SDK
calls (``messages.create`` with the very prompts fleet built, made before the
clock starts) at the same concurrency. The server runs in its own process, so
neither side's CPU includes it. Reported: turns per second, the peak number
of calls in flight the server saw, and CPU milliseconds per turn in this
process; the ratio is ours over the floor's CPU per turn (goal <= 1.5), and
the goal for calls in flight is at least 200. Seed 000's machine was
saturated at 10 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from benchlib import log, median, result, workdir

from fleet import canonical
from fleet import world as world_mod
from fleet.commands.init import init
from fleet.prompt import PromptBuilder
from fleet.providers.anthropic import AnthropicProvider
from fleet.state import MemorySnapshot
from fleet.streams import run_turns
from fleet.world import View

DEFAULT_REPEAT = 1
KEY = "sk-bench-not-a-real-key"
MODEL = "claude-sonnet-4-6"

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.servers.anthropic_api import spawn  # noqa: E402


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--turns", type=int, default=None, help="agent turns (default 500; --small 100)")
    p.add_argument("--concurrency", type=int, default=250, help="turns in flight (default 250)")
    p.add_argument("--latency", type=float, default=1.0, help="server seconds per call (default 1)")


def world(tmp: Path, agents: int, concurrency: int) -> MemorySnapshot:
    repo = tmp / "fleet"
    init(repo)
    cfg = orjson.loads((repo / "state/config.json").read_bytes())
    names = [f"a{i:04d}" for i in range(agents)]
    cfg["agents"] = {a: {"priority": 0} for a in names}
    cfg["run"].update(model=MODEL, concurrency=concurrency, max_retries=0, turn_timeout_seconds=60)
    cfg["budgets"] = {}
    files = {str(p.relative_to(repo)): p.read_bytes()
             for sub in ("state", "schemas") for p in (repo / sub).rglob("*") if p.is_file()}
    files["state/config.json"] = canonical.dumps(cfg)
    for a in names:
        files[f"state/agents/{a}.json"] = canonical.dumps(
            {"id": a, "name": a, "persona": f"{a} is an agent of the benchmark, curious about everything.",
             "bio": "", "interests": [], "karma": 0, "post_count": 0, "memory": []})
    return MemorySnapshot(files)


def stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/_stats") as r:
        return json.loads(r.read())


async def ours(snap: MemorySnapshot, agents: list[str], url: str) -> tuple[float, float, int]:
    provider = AnthropicProvider(snap.config, api_key=KEY, base_url=url)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        bodies = await run_turns(provider, snap, agents, tick=1, worker="w1")
    finally:
        await provider.aclose()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    errors = sum(1 for b in bodies if b["meta"].get("error"))
    return wall, cpu, errors


async def floor(snap: MemorySnapshot, agents: list[str], url: str, concurrency: int) -> tuple[float, float, int]:
    import anthropic

    w = world_mod.load(snap.config, snap.read)
    builder = PromptBuilder(View(snap, tick=snap.tick + 1), w.prompt, snap.config.run.context_tokens, snap.config.name)
    tools = {a: w.definitions(w.tools_of(snap.config, a)) for a in agents}
    prompts = [builder.for_agent(a) for a in agents]  # fleet's own requests, made before the clock
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=url, max_retries=0, timeout=60)
    sem = asyncio.Semaphore(concurrency)
    failures = 0

    async def call(agent: str, prompt: Any) -> None:
        nonlocal failures
        async with sem:
            try:
                await client.messages.create(model=MODEL, max_tokens=1024, system=prompt.system,
                                             messages=prompt.messages, tools=tools[agent], metadata={"user_id": agent})
            except anthropic.APIError:
                failures += 1

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(call(a, p) for a, p in zip(agents, prompts)))
    finally:
        await client.close()
    return time.perf_counter() - t0, time.process_time() - c0, failures


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    turns = args.turns or (100 if args.small else 500)
    with workdir(args.tmp, "fleet-bench-streams-", args.keep) as tmp:
        snap = world(tmp, turns, args.concurrency)
        agents = sorted(snap.config.agents)
        rows = []
        for _ in range(args.repeat):
            with spawn("--latency", str(args.latency)) as (url, _proc):
                o = asyncio.run(ours(snap, agents, url))
                peak_ours = stats(url)["max_in_flight"]
            with spawn("--latency", str(args.latency)) as (url, _proc):
                f = asyncio.run(floor(snap, agents, url, args.concurrency))
                peak_floor = stats(url)["max_in_flight"]
            log(f"ours: {o[0]:.2f}s wall, {1000 * o[1] / turns:.2f} ms CPU/turn, {o[2]} errors, peak {peak_ours}; "
                f"floor: {f[0]:.2f}s wall, {1000 * f[1] / turns:.2f} ms CPU/turn, peak {peak_floor}")
            rows.append((o, f, peak_ours, peak_floor))
    o_cpu = median([r[0][1] for r in rows]) * 1000 / turns
    f_cpu = median([r[1][1] for r in rows]) * 1000 / turns
    o_wall = median([r[0][0] for r in rows])
    f_wall = median([r[1][0] for r in rows])
    return [result("streams", o_cpu, f_cpu, "ms CPU per turn", goal=1.5, turns=turns,
                   concurrency=args.concurrency, latency_s=args.latency,
                   peak_in_flight=min(r[2] for r in rows), peak_in_flight_floor=min(r[3] for r in rows),
                   in_flight_goal=200, turns_per_s=round(turns / o_wall, 1), turns_per_s_floor=round(turns / f_wall, 1),
                   wall_s=round(o_wall, 2), wall_s_floor=round(f_wall, 2), errors=rows[-1][0][2],
                   cpus=os.cpu_count())]
