"""`fleet work`'s numeric options hold what config allows: --concurrency is
run.concurrency's range (1 to 2048), refused in one line outside it, never
quietly taken as config's value (0) or as 1 (a negative number)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from conftest import Fleet, run
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]


def test_the_concurrency_range_is_config_s() -> None:
    schema = json.loads((REPO / "schemas" / "config.schema.json").read_text())
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "concurrency" in node and isinstance(node["concurrency"], dict) and "maximum" in node["concurrency"]:
                found.append((node["concurrency"]["minimum"], node["concurrency"]["maximum"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert found == [(1, 2048)]


@settings(max_examples=30, deadline=None)
@given(n=st.one_of(st.integers(max_value=0), st.integers(min_value=2049)))
def test_a_concurrency_outside_1_to_2048_is_a_usage_error(n: int) -> None:
    with tempfile.TemporaryDirectory() as empty:  # refused while the options are read: no fleet is opened
        f = Fleet(Path(empty))
        r = run(f, "work", "--worker", "1", "--workers", "1", "--concurrency", str(n), code=2)
    assert "--concurrency" in r.output and "1<=x<=2048" in r.output, r.output


def test_concurrency_at_the_bounds_runs(fleet: Fleet, tmp_path: Path) -> None:
    for n in ("1", "2048"):
        out = tmp_path / f"out{n}"
        r = run(fleet, "work", "--worker", "1", "--workers", "1", "--remote", str(fleet.path), "--outbox", str(out),
                "--concurrency", n, "--json")
        assert json.JSONDecoder().raw_decode(r.output)[0]["deltas"] > 0
