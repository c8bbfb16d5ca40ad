"""The job summary table and the quarantine annotations a GitHub job shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Fleet

from fleet.delta import Op


def test_merge_writes_a_summary_table_and_one_annotation_per_quarantined_delta(
        fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(out))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    fleet.push(fleet.delta("basil", Op("set", "posts", "ada-1", ("title",), "not yours"),
                           meta={"usage": {"input_tokens": 1200, "output_tokens": 34, "cost_usd": 0.0042}}),
               fleet.delta("ada", Op("set", "agents", "ada", ("bio",), "hi"), stream="s2",
                           meta={"usage": {"input_tokens": 1000, "output_tokens": 50, "cost_usd": 0.004}}))
    r = fleet.fleet("merge")
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "| agents | applied | no-op | held | conflicts | quarantined | tokens | cost |" in text
    assert "| 1 | 1 | 0 | 0 | 0 | 1 | 2,284 | $0.0082 |" in text  # the quarantined turn's tokens were spent too
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("::warning ")]
    assert len(warnings) == 1 and "agent basil may not set posts/ada-1 title" in warnings[0]
    assert "title=fleet%3A quarantined deltas/w1/s1/" in warnings[0]


def test_a_dry_run_previews_and_writes_nothing(fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(out))
    main = fleet.main()
    fleet.push(fleet.delta("ada", Op("set", "agents", "ada", ("bio",), "hi")))
    assert fleet.fleet("merge", "--dry-run").exit_code == 0
    assert fleet.main() == main and fleet.branches() == ["refs/heads/fleet/t1/w1"]
    assert "(dry run: nothing published)" in out.read_text()


def test_no_summary_outside_actions(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    fleet.push(fleet.delta("basil", Op("set", "posts", "ada-1", ("title",), "not yours")))
    r = fleet.fleet("merge")
    assert "::warning" not in r.output


@pytest.mark.parametrize("where", ["/dev/full", "{tmp}", "{tmp}/missing/summary.md", "{tmp}/fifo"])
def test_a_summary_that_cannot_be_written_is_a_warning_not_a_failed_merge(
        fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """GITHUB_STEP_SUMMARY=/dev/full turned a published tick into exit 1 (an
    internal error after the push); a folder there failed every worker of a run."""
    if where == "/dev/full" and not Path(where).exists():
        pytest.skip("no /dev/full here")
    if where == "{tmp}/fifo":
        import os
        os.mkfifo(tmp_path / "fifo")  # no reader: opening it to write waited for one, for ever
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", where.format(tmp=tmp_path))
    fleet.push(fleet.delta("ada", Op("set", "agents", "ada", ("bio",), "hi")))
    r = fleet.fleet("merge")
    assert r.exit_code == 0 and "internal error" not in r.output, r.output
    assert "fleet: warning: GITHUB_STEP_SUMMARY" in r.output and "the job summary was not written" in r.output
    assert fleet.branches() == []  # published and cleaned up
