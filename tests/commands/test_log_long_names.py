"""`fleet log DOC` with a long or hostile DOC names it in its error shortened
and escaped, as --delta does: one line, never the 5,000 characters back."""

from __future__ import annotations

import pytest
from conftest import Fleet, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(coll=st.sampled_from(["posts", "nope", "agents"]), name=st.text(min_size=300, max_size=5000))
def test_a_long_document_name_is_shortened_in_the_error(fleet: Fleet, coll: str, name: str) -> None:
    doc = f"{coll}/{name}"
    r = fleet.fleet("log", doc)
    assert r.exit_code in (1, 2) and "Traceback" not in r.output
    assert len(r.output) < 1000 and "\x1b" not in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [("posts/" + "x" * 5000,), ("nope/" + "x" * 5000,),
                                  ("posts/" + "x" * 5000, "--field", "title"),
                                  ("posts/ada-1", "--field", "y" * 5000)])
def test_the_walkthrough_names(fleet: Fleet, args: tuple[str, ...]) -> None:
    r = run(fleet, "log", *args, code=1)  # (nope/: no such collection, now or in the history)
    assert len(r.output) < 1000 and "chars)" in r.output
