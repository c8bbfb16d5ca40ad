"""What fleet says of limits.window is what the tree holds: the merge of tick j keeps
the ledger and quarantine of ticks j - window to j (window + 1 folders), and
`fleet status`, the pruned-ledger reason and the README count them so. What is
pruned does not change (replay stays byte-identical); only the words did."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from conftest import Fleet, run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet.commands.init import init
from fleet.delta import Op

README = Path(__file__).resolve().parents[1] / "README.md"


def _window(f: Fleet, window: int) -> None:
    cfg = json.loads(f.git.show("refs/heads/main", "state/config.json") or b"")
    cfg["limits"]["window"] = window
    (f.path / "state/config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", f"window {window}"],
                   cwd=f.path, check=True)


def _folders(f: Fleet, rev: str, folder: str) -> set[int]:
    out = f.git.text("ls-tree", "--name-only", f"{rev}:state/{folder}") if f.git.proc(
        "rev-parse", "-q", "--verify", f"{rev}:state/{folder}").returncode == 0 else ""
    return {int(n) for n in out.split()}


@given(window=st.integers(1, 3), ticks=st.integers(1, 6))
@example(window=2, ticks=5)
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
def test_status_counts_the_quarantine_over_the_ticks_it_names(tmp_path_factory: Any, window: int, ticks: int) -> None:
    f = Fleet(tmp_path_factory.mktemp("words") / "fleet")
    init(f.path)
    _window(f, window)
    for t in range(1, ticks + 1):  # one quarantined delta (no such agent) and one applied, each tick
        f.push(f.delta("nobody", Op("incr", "posts", "ada-1", ("score",), 1), tick=t, worker="w2"),
               f.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=t))
        run(f, "merge")
    kept = set(range(max(1, ticks - window), ticks + 1))
    assert _folders(f, "refs/heads/main", "quarantine") == kept == _folders(f, "refs/heads/main", "ledger")
    s = json.loads(run(f, "status", "--json").stdout)
    assert {q["tick"] for q in s["recent_quarantine"]} == kept
    [line] = [n for n in s["needs_you"] if "quarantined delta(s)" in n]
    m = re.fullmatch(r"(\d+) quarantined delta\(s\) in the last (\d+) ticks: .*", line)
    assert m and int(m[1]) == len(kept), line
    assert int(m[2]) == window + 1 and (ticks <= window or int(m[2]) == len(kept)), line  # the ticks counted


def test_a_pruned_ledger_is_said_to_have_kept_the_ticks_its_tree_kept(fleet: Fleet) -> None:
    """Window lowered to 1, then raised: the merge of tick 4 kept ticks 3 and 4, which
    its reason once called "kept 1 tick(s)"."""
    once = fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=2)
    run(fleet, "merge", "--allow-empty")  # tick 1
    fleet.push(once)
    run(fleet, "merge")  # tick 2: applied
    _window(fleet, 1)
    for t in (3, 4):
        fleet.push(fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), tick=t))
        run(fleet, "merge")
    tick4 = fleet.main()
    _window(fleet, 5)
    fleet.push(once)  # its branch delivered again, its ledger deleted by the merge of tick 4
    [q] = json.loads(run(fleet, "merge", "--json").stdout)["quarantined"]
    m = re.search(r"deleted by the merge of tick (\d+), which kept ticks (\d+) to (\d+) \(limits.window was (\d+) "
                  r"then\)", q["reason"])
    assert m, q["reason"]
    j, first, last, window = (int(x) for x in m.groups())
    assert (j, last, window) == (4, 4, 1)
    assert _folders(fleet, tick4, "ledger") == set(range(first, last + 1))  # what it says it kept, it kept


def test_the_readme_says_how_many_ticks_the_tree_keeps() -> None:
    text = " ".join(README.read_text().split())
    assert "The tree keeps `limits.window` ticks" not in text
    assert "(`limits.window` + 1 folders)" in text
