"""A secret's value that a tick would write into a document is refused there, with the
name of the variable; the commit's last net (masking) never rewrites a document into
another one nobody checked (a key renamed "[REDACTED]", a value its schema refuses)."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import schemas
from fleet.delta import Op
from fleet.keys import MASK
from fleet.state import MemorySnapshot
from tests.engine.test_ops import after, applied, delta, merge, read, refused
from tests.engine.test_ops import world as world  # noqa: F401  (the fixture)


def _texts(doc: Any) -> list[str]:
    """Every key and string value in ``doc`` of a key's length (keys.MIN_LENGTH)."""
    out: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += [k] + _texts(v)
    elif isinstance(doc, list):
        for v in doc:
            out += _texts(v)
    elif isinstance(doc, str):
        out.append(doc)
    return [t for t in out if len(t) >= 8]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_a_document_that_would_hold_a_secret_is_refused_not_masked(world: dict[str, bytes], data: Any) -> None:
    snap = MemorySnapshot(world)
    post = read(snap, "posts", "ada-1")
    secret = data.draw(st.sampled_from(sorted(set(_texts(post)))))
    touch = data.draw(st.sampled_from([Op("incr", "posts", "ada-1", ("score",), 1),
                                       Op("set", "posts", "ada-1", ("title",), "A title of its own")]))
    other = delta("basil", Op("incr", "agents", "ada", ("karma",), 1))
    d = delta("ada", touch)
    os.environ["FOO_TOKEN"] = secret
    try:
        r = merge(snap, d, other)
    finally:
        del os.environ["FOO_TOKEN"]
    reason = refused(r).get(d["id"], "")
    if secret == "A title of its own" or touch.path == ("title",) and secret == post["title"]:
        return  # the set takes the value away, or brings it: the document does or does not hold it
    assert "value of FOO_TOKEN" in reason, (secret, refused(r))
    assert applied(r) == [other["id"]]  # the rest of the tick goes on
    new = after(snap, r)
    assert read(new, "posts", "ada-1") == post  # main's document as it was
    for path in new.under("state/posts"):
        body = json.loads(new.read(path))
        assert MASK not in json.dumps(body)
        assert schemas.first_error(new.validator("posts"), body) is None
