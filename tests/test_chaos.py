"""The fault campaign (tests/chaos/run.py), short: a few ticks in which every worker,
the merge and a task holder meet a seeded fault, then nothing lost, doubled or
invalid. The full campaign is `python tests/chaos/run.py --ticks 20 --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent / "chaos" / "run.py"


def campaign(*args: str) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, str(RUN), "--json", *args], capture_output=True, text=True, timeout=900)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stdout.strip(), p.stderr[-3000:]  # the campaign stopped: its last lines say why
    return p.returncode, json.loads(p.stdout.splitlines()[-1])


def test_a_short_campaign_loses_doubles_and_breaks_nothing() -> None:
    code, out = campaign("--ticks", "3", "--seed", "11")
    assert (out["lost"], out["doubled"], out["invalid"]) == (0, 0, 0), out["problems"]
    assert code == 0 and out["faults"] >= 6 and len(out["kinds"]) >= 4


def test_the_campaign_catches_a_delta_applied_twice() -> None:
    code, out = campaign("--ticks", "1", "--seed", "5", "--sabotage")
    assert code == 1 and out["doubled"] >= 1 and out["invalid"] >= 1
    assert any("applied 2 times" in p for p in out["problems"])
