#!/usr/bin/env python
"""Run one of fleet's benchmarks: ``python tests/bench/run.py NAME [--json] [options]``.

Every benchmark times fleet ("ours") against a floor measured in the same run
on an identical copy of the same input: the least work any tool must do for
the same job (read the files with ``json``, write them back, one git commit).
It prints one line per result; with ``--json`` a JSON object with at least
``bench``, ``ours``, ``floor``, ``ratio`` (ours / floor, lower is better) and
``unit``, plus sizes and details. Progress goes to stderr.

A benchmark is a module ``tests/bench/<name>.py`` (dashes become
underscores) exposing ``run(args) -> list[dict]`` and optionally
``add_arguments(parser)`` and ``DEFAULT_REPEAT`` / ``SMALL_REPEAT``. To add
one, write the module and add a line to ``BENCHMARKS``.

Needs only an installed fleet (``pip install -e .``) and git.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent

# name -> one-line description. The module is tests/bench/<name with _ for ->.py.
BENCHMARKS: dict[str, str] = {
    "merge": "one tick of 25,600 deltas (256 workers x 100 agents) into 10,000 documents, "
             "validation and the git commit included, against json + git add/commit and against "
             "orjson + one fast-import commit, with peak memory; and 1,000 appends to one document with a culprit",
    "tick-overhead": "coordination cost of one tick (fleet work x W + fleet merge) for 1, 4, 16, 64 workers "
                     "over git daemon, against raw git fetch/commit/push of the same files",
    "history": "a fresh worker's shallow fetch (and whole fleet work) at tick 2,000 against tick 10",
    "streams": "500 agent turns on the Anthropic SDK against a local Messages API with 1 s latency, "
               "CPU per turn against bare SDK calls at the same concurrency",
    "cache-prefix": "share of each prompt's tokens read from the cache from the second agent of a tick on",
    "bigworld": "a world the size of Rappterbook's (138 agents, 11,434 posts, 52,842 comments, tick 488): "
                "fleet validate against orjson + jsonschema-rs, a fresh worker against its shallow checkout",
    "scale": "a tick of 256 workers x 40 agents in coalesced mode over git daemon: pushes per tick, the merge and "
             "the whole coordination time against raw git",
    "growth": "1,000 ticks of one fleet: main's tree, a shallow clone and replay per tick at tick 1,000 against "
              "tick 100, with the repository's size",
    "report": "fleet report's reading of 2,000 ticks of history (60 agents, 3 workers) against one "
              "git log -p of the ledger and state/fleet.json parsed with orjson",
    "claim": "fleet task claim, one claimer and 16 at once over git daemon, against a one-file queue "
             "claimed by fetch/reset/commit/push (seed 001); then claims per second at 1, 4 and 16 "
             "claimers on 1,000 tasks against the ceiling of serialised compare-and-swap pushes",
    "bus": "fleet msg send from 1, 4 and 16 senders on their own clones over git daemon, against the "
           "ceiling of serialised compare-and-swap pushes on the same origin",
    "jobcost": "one worker job on a fresh runner, from no venv to its first model call: fleet installed from the "
               "plan job's wheelhouse, and as before from source, against a venv with the same wheels unzipped",
}


def load(name: str) -> ModuleType:
    path = BENCH_DIR / f"{name.replace('-', '_')}.py"
    if not path.is_file():
        raise SystemExit(f"run.py: benchmark {name!r} is registered but {path} does not exist")
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))  # for benchlib
    spec = importlib.util.spec_from_file_location(f"fleet_bench_{name.replace('-', '_')}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise SystemExit(f"run.py: {path} has no run(args) function")
    return module


def common_parser(prog: str, module: ModuleType | None) -> argparse.ArgumentParser:
    listing = "\n".join(f"  {n:<14} {d}" for n, d in BENCHMARKS.items())
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time fleet against a floor measured in the same run.",
        epilog=f"benchmarks:\n{listing}\n\n`run.py NAME --help` also lists NAME's own options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("--json", action="store_true", help="one JSON object per result line")
    p.add_argument("--small", action="store_true", help="a quick, smaller size of the benchmark")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs of each side; the median is reported (default: the benchmark's)")
    p.add_argument("--profile", action="store_true",
                   help="also run fleet's side once under cProfile; top 25 cumulative to stderr")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated input (default 1)")
    p.add_argument("--tmp", metavar="DIR", default=None,
                   help="where scratch repositories go (default: $FLEET_BENCH_TMP, else /dev/shm if it is a "
                        "RAM disk with 2 GB free, else $TMPDIR); give a disk folder to include the disk's time")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder and say where it is")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if a result's ratio is above its goal")
    if module is not None and hasattr(module, "add_arguments"):
        module.add_arguments(p.add_argument_group(f"{module.__name__.removeprefix('fleet_bench_')} options"))
    return p


def human(r: dict[str, Any]) -> str:
    unit = r.get("unit", "")
    goal = f" (goal <= {r['goal']})" if r.get("goal") is not None else ""
    head = f"{r['bench']}: ours {r['ours']:.3f} {unit}, floor {r['floor']:.3f} {unit}, ratio {r['ratio']}{goal}"
    skip = {"bench", "ours", "floor", "ratio", "unit", "goal"}
    extras = ", ".join(f"{k}={v}" for k, v in r.items() if k not in skip and not isinstance(v, (dict, list)))
    nested = "".join(f"\n  {k}: {json.dumps(v)}" for k, v in r.items() if k not in skip and isinstance(v, (dict, list)))
    return head + (f"\n  {extras}" if extras else "") + nested


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "python tests/bench/run.py"
    first = next((a for a in argv if not a.startswith("-")), None)
    module = load(first) if first in BENCHMARKS else None
    args = common_parser(prog, module).parse_args(argv)
    try:
        import fleet  # noqa: F401
    except ImportError:
        print("run.py: cannot import fleet; run `pip install -e .` in the repository first", file=sys.stderr)
        return 2
    if args.tmp is None:
        from benchlib import default_tmp

        args.tmp = default_tmp()
    if args.repeat is None:
        args.repeat = getattr(module, "SMALL_REPEAT" if args.small else "DEFAULT_REPEAT", 1)
    if args.repeat < 1:
        print("run.py: --repeat must be at least 1", file=sys.stderr)
        return 2
    assert module is not None
    results = module.run(args)
    failed = False
    for r in results:
        print(json.dumps(r) if args.json else human(r), flush=True)
        goal = r.get("goal")
        if goal is not None and r.get("ratio") is not None and r["ratio"] > goal:
            failed = True
        if r.get("goal_vs_naive") is not None and r.get("vs_naive", 0) < r["goal_vs_naive"]:
            failed = True  # a throughput line's second goal: so many times the naive scheme's rate
        if any(r.get(k) for k in ("double_claims", "lost", "doubled", "invalid")):
            failed = True  # an invariant broken is a failed benchmark whatever its speed
    return 1 if (failed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
