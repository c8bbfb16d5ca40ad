"""The delta format (fleet/delta.py): one file in, a Delta or one reason out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet.config import Limits
from fleet.delta import Arrival, Op, Rejected, file_path, make, parse

LIMITS = Limits()


def arrival(body: dict, path: str | None = None) -> Arrival:
    return Arrival("refs/heads/fleet/t1/w1", path or file_path(body), canonical.dumps(body))


def test_a_delta_made_is_a_delta_parsed() -> None:
    body = make(tick=3, worker="w1", stream="s1", agent="ada", ops=[Op("incr", "posts", "p", ("score",), 2)])
    d = parse(arrival(body), LIMITS)
    assert (d.id, d.tick, d.worker, d.agent) == (body["id"], 3, "w1", "ada")
    assert d.ops == (Op("incr", "posts", "p", ("score",), 2),) and d.line == canonical.dumps_line(body)
    assert d.key[:4] == (3, body["utc"], "w1", body["id"])


@pytest.mark.parametrize("change,rule", [
    (lambda b: b.update(id="t9-w1-s1-x"), "must start with 't3-w1-'"),
    (lambda b: b.update(ops=[]), "(schemas/delta.schema.json)"),  # an empty delta must say why
    (lambda b: b.update(tick=3.0), "not an integer in the JSON text"),
    (lambda b: b["meta"].update(usage={"input_tokens": 10**10}), "maximum"),
    (lambda b: b.update(extra=1), "(schemas/delta.schema.json)"),
])
def test_a_bad_delta_is_rejected_with_its_rule(change, rule: str) -> None:
    body = make(tick=3, worker="w1", stream="s1", agent="ada", ops=[Op("delete", "posts", "p")])
    path = file_path(body)
    change(body)
    with pytest.raises(Rejected, match=".*") as e:
        parse(arrival(body, path), LIMITS)
    assert rule in str(e.value)


@pytest.mark.parametrize("path,rule", [
    ("deltas/w2/s1/x.json", "another worker's directory"),
    ("deltas/x.json", "must be in its worker's folder"),
    ("other/w1/s1/x.json", "must be in its worker's folder"),
])
def test_the_folder_names_the_worker(path: str, rule: str) -> None:
    body = make(tick=1, worker="w1", stream="s1", agent="ada", ops=[Op("delete", "posts", "p")])
    with pytest.raises(Rejected, match=rule):
        parse(arrival(body, path), LIMITS)


def test_size_and_refusals_come_before_reading() -> None:
    body = make(tick=1, worker="w1", stream="s1", agent="ada", meta={"noop": "x" * 100})
    with pytest.raises(Rejected, match="over limits.max_delta_bytes"):
        parse(arrival(body), Limits(max_delta_bytes=50))
    with pytest.raises(Rejected, match="symbolic link"):
        parse(Arrival("inbox", "deltas/w1/s1/x.json", b"", refused="is a symbolic link"), LIMITS)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.tuples(*(st.integers(0, hi) for hi in (9999, 13, 32, 25, 61, 62, 999999))).map(
        lambda t: "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:06d}Z".format(*t)),
    st.text(alphabet="0123456789-T:.Z +١", min_size=20, max_size=30)))
def test_on_calendar_says_what_strptime_says(utc: str) -> None:
    """The merge's check that a delta's utc is a time on the calendar (by the constructor,
    for speed) answers as datetime.strptime with the schema's format does."""
    import datetime as _dt

    from fleet.delta import on_calendar

    try:
        _dt.datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S.%fZ")
        expected = len(utc) == 27  # (strptime takes fewer digits than the schema's pattern allows)
    except ValueError:
        expected = False
    assert on_calendar(utc) == expected, utc
