"""What `fleet status` and `fleet plan` say of a budget is one thing: while a tick's spend
cannot be counted (every delta of it quarantined unread), neither says a figure is left
of a budget it also says cannot be counted; what a day or month spent is "at least" what
is known; a budget the known spend already exceeds is spent, with nothing left."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from conftest import Fleet, run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet.commands.init import init

budgets = st.one_of(st.none(), st.fixed_dictionaries({}, optional={"usd": st.sampled_from([0.5, 5.0]),
                                                                   "tokens": st.sampled_from([100, 10 ** 6])}
                                                         ).filter(bool))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(day=budgets, month=budgets, tokens=st.sampled_from([0, 120, 5000]), cost=st.sampled_from([0.0, 1.0]))
@example(day={"usd": 5.0}, month=None, tokens=6251, cost=0.0)  # the walkthrough's: one tick, then one unread
def test_a_budget_that_cannot_be_counted_is_said_so_everywhere(tmp_path_factory: Any, day: dict | None,
                                                             month: dict | None, tokens: int, cost: float) -> None:
    f = Fleet(tmp_path_factory.mktemp("budget") / "fleet")
    init(f.path)
    cfg = json.loads((f.path / "state/config.json").read_text())
    for name, b in (("day", day), ("month", month)):
        if b is not None:
            cfg["budgets"][name] = b
    (f.path / "state/config.json").write_bytes(canonical.dumps(cfg))
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "budgets", "--allow-empty"],
                   cwd=f.path, check=True)
    usage = {"input_tokens": tokens, "output_tokens": 0, "cost_usd": cost}
    f.push(f.delta("ada", meta={"noop": "resting", "usage": usage}))
    run(f, "merge")
    f.push_raw("w1", "deltas/w1/s1/t2-w1-s1-bad.json", b"{bad", tick=2)  # the tick's only delta, no JSON
    run(f, "merge")

    s = json.loads(run(f, "status", "--json").stdout)
    text = run(f, "status").stdout
    plan = run(f, "plan", code=3 if s["budgets"]["stopped"] else 0).stdout
    for name, key, b in (("today", "day", day), ("this month", "month", month)):
        p = s["budgets"][key]
        [line] = [ln for ln in text.splitlines() if ln.startswith(f"{name}: ")]
        assert line.startswith(f"{name}: at least $") and "tick 2 spent an unknown amount" in line, line
        assert p.get("uncounted") == 2  # tick 2 counts in both
        if b is None:
            assert f"(tick 2 spent an unknown amount; no budgets.{key})" in line, line
            continue
        assert f"{name}: at least $" in plan, plan
        if p["spent"]:  # what is known spends it already: nothing is left, whatever tick 2 spent
            assert p["left"] is not None and 0 in p["left"].values() and line.endswith(f"of budgets.{key} (spent)")
        else:  # what is left is not known: no figure is said to be left of it
            assert p["left"] is None and line.endswith(f", so what is left of budgets.{key} cannot be counted"), line
            assert not re.search(rf"(\$[0-9.]+|[0-9,]+ tokens) left of budgets\.{key}\b", line), line
    unknown = s["budgets"]["unknown"]
    if day is None and month is None:
        assert unknown is None and s["budgets"]["stopped"] is None
        return
    assert unknown is not None and unknown["tick"] == 2
    stop = s["budgets"]["stopped"]
    assert stop is not None and f"next tick: tick 3 is not due: {stop}" in text
    assert f"no new tick starts: {stop}" in s["needs_you"]
    if "cannot be counted" in stop:  # the budget it names is not said to have a figure left
        counted = re.match(r"budgets\.(day|month) cannot be counted", stop)
        assert counted and not re.search(rf"(\$[0-9.]+|[0-9,]+ tokens) left of budgets\.{counted[1]}", text), text
