"""The report counts each tick's deltas as its merge did, and as `fleet status`
does: applied, no-op, held for a person, quarantined, each delta once; and the
conflicts apart from the deltas held in them."""

from __future__ import annotations

import html.parser
import json
import tempfile
from pathlib import Path
from typing import Any

from conftest import Fleet, run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet import report as report_mod
from fleet.commands.init import init
from fleet.delta import Op

TICK = st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 3), st.integers(0, 2))  # set, no-op, same field, bad


def merge_tick(f: Fleet, tick: int, plan: tuple[int, int, int, int]) -> dict[str, Any]:
    fresh, noop, same, bad = plan
    bodies = [f.delta("basil", Op("set", "posts", "ada-1", ("score",), tick * 10 + i), tick=tick, worker=f"w{i}")
              for i in range(min(fresh, 1))]  # one change to a field nobody else sets this tick
    bodies += [f.delta("cyd", tick=tick, worker=f"w{i}", meta={"noop": "resting"}) for i in range(noop)]
    # the same field set to different values: a conflict opened (or joined) that holds them all
    bodies += [f.delta("ada", Op("set", "posts", "ada-1", ("title",), f"title {tick}.{i}"), tick=tick,
                       worker=f"w{i + 5}") for i in range(same)]
    if bodies:
        f.push(*bodies)
    for i in range(bad):
        f.push_raw("w1", f"deltas/w1/s1/bad-{tick}-{i}.json", b'{"id": "t1-w1-s1-0",', tick=tick)
    out: dict[str, Any] = json.loads(run(f, "merge", "--json").output)
    return out


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TICK, min_size=1, max_size=4))
@example([(1, 1, 2, 1), (1, 0, 1, 0), (0, 2, 0, 2)])  # a conflict opened, then joined
def test_each_delta_is_counted_once_as_the_merge_counted_it(plan: list[tuple[int, int, int, int]]) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        f = Fleet(Path(tmp) / "fleet")
        init(f.path)
        merges = []
        for n, p in enumerate(plan, start=1):
            if not any(p):
                p = (0, 1, 0, 0)  # a tick with nothing merged is no tick
            merges.append(merge_tick(f, n, p))
        status = json.loads(run(f, "status", "--json").output)
        data = report_mod.collect(f.path, ticks=None)
        rows = [r.to_json() for r in data.ticks]
        want = [{"tick": m["tick"], "applied": m["applied"], "noop": m["noop"], "held": m["held_deltas"],
                 "quarantined": len(m["quarantined"]), "conflicts": len(m["held"])} for m in merges]
        got = [{k: r[k] for k in want[0]} for r in rows]
        assert got == want
        last = status["deltas"]
        assert {k: last[k] for k in ("applied", "noop", "held", "quarantined", "conflicts")} == \
            {k: rows[-1][k] for k in ("applied", "noop", "held", "quarantined", "conflicts")}
        # the page: its data, its tables and its summary say the same
        page = report_mod.render(data)
        embedded = canonical.load(page.split('id="fleet-data">', 1)[1].split("</script>", 1)[0].encode(), "page")
        assert [{k: r[k] for k in want[0]} for r in embedded["ticks"]] == want
        stat = page.split('id="stat-applied" aria-labelledby="stat-applied-label">', 1)[1].split("<", 1)[0]
        assert int(stat.replace(",", "")) == sum(m["applied"] for m in merges)
        held = page.split('id="stat-held" aria-labelledby="stat-held-label">', 1)[1].split("<", 1)[0]
        assert int(held.replace(",", "")) == sum(m["held_deltas"] for m in merges)
        assert table_rows(page, "Deltas per tick") == \
            [[str(m["tick"]), str(m["applied"]), str(m["noop"]), str(m["held_deltas"]), str(len(m["quarantined"])),
              str(m["late"])] for m in merges]


def table_rows(page: str, caption: str) -> list[list[str]]:
    """The body rows of the table whose caption is ``caption``, cell by cell."""
    class Table(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: list[tuple[str, list[list[str]]]] = []
            self.cell: list[str] | None = None
            self.caption = False
            self.body = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "table":
                self.tables.append(("", []))
            elif tag == "caption":
                self.caption = True
            elif tag == "tbody":
                self.body = True
            elif tag == "tr" and self.body:
                self.tables[-1][1].append([])
            elif tag in ("td", "th") and self.body:
                self.cell = []

        def handle_data(self, data: str) -> None:
            if self.caption:
                self.tables[-1] = (self.tables[-1][0] + data, self.tables[-1][1])
            elif self.cell is not None:
                self.cell.append(data)

        def handle_endtag(self, tag: str) -> None:
            if tag == "caption":
                self.caption = False
            elif tag == "tbody":
                self.body = False
            elif tag in ("td", "th") and self.cell is not None:
                self.tables[-1][1][-1].append("".join(self.cell))
                self.cell = None

    p = Table()
    p.feed(page)
    [rows] = [rows for cap, rows in p.tables if caption in cap]
    return rows
