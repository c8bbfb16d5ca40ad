"""The one JSON reader: text in canonical form takes the fast way (orjson, then
written back and compared), anything else the strict way. Both must accept the
same values and refuse the same texts, so these properties compare them on
generated values and on generated mutations of their text."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import canonical

scalars = (st.none() | st.booleans() | st.integers(min_value=canonical.MIN_INT, max_value=canonical.MAX_INT)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)


def strict(data: bytes, depth: int = canonical.RECORD_DEPTH) -> Any:
    """What the strict way alone makes of ``data``: a value, or the problem's text."""
    try:
        obj = canonical._strict(data, depth)
        canonical.check(obj, strings=b"\\u" in data, max_depth=depth)
        return ("ok", obj)
    except canonical.JSONProblem as e:
        return ("refused", str(e))


def parsed(data: bytes, depth: int = canonical.RECORD_DEPTH) -> Any:
    try:
        return ("ok", canonical.parse(data, depth))
    except canonical.JSONProblem as e:
        return ("refused", str(e))


@settings(max_examples=300, deadline=None)
@given(values)
def test_a_canonical_text_reads_back_as_the_strict_reader_reads_it(v: Any) -> None:
    data = canonical.dumps(v)
    assert canonical._canonical(data) is not canonical._NOT  # it takes the fast way
    assert parsed(data) == strict(data)
    assert parsed(data, 3) == strict(data, 3)  # the depth limit holds on the fast way too


@settings(max_examples=300, deadline=None)
@given(values, st.sampled_from(["dup", "bigint", "surrogate", "deep", "bom", "nan", "float", "markers"]))
def test_a_text_that_breaks_a_rule_is_refused_on_either_way(v: Any, how: str) -> None:
    """Texts near canonical form that break one rule each: a duplicate key (orjson would
    keep the last), an integer beyond 64 bits (orjson would make it a float), a lone
    surrogate, too deep, a BOM, NaN, conflict markers; and a float written the long
    way, which is fine. Whatever the fast way does, the answer is the strict one's."""
    base = canonical.dumps({"k": v})
    data = {
        "dup": base[:-2] + b',\n  "k": 1\n}\n',
        "bigint": canonical.dumps({"k": 1}).replace(b"1", b"18446744073709551616"),
        "surrogate": canonical.dumps({"k": "x"}).replace(b'"x"', b'"\\ud800"'),
        "deep": canonical.dumps(orjson.loads(b"[" * 80 + b"]" * 80)),
        "bom": b"\xef\xbb\xbf" + base,
        "nan": base.replace(b'"k": ', b'"k": NaN, "j": ', 1),
        "float": canonical.dumps({"k": 1.5}).replace(b"1.5", b"1.50"),
        "markers": b"<<<<<<< ours\n" + base,
    }[how]
    assert parsed(data) == strict(data)
    if how != "float":
        assert parsed(data)[0] == "refused"


@given(st.recursive(st.integers(0, 9), lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                   st.dictionaries(st.sampled_from("ab/~é"), inner, max_size=3)),
                    max_leaves=12), st.sampled_from(["1" * 30, "-" + "9" * 25, "1e999"]), st.randoms())
def test_a_number_fleet_cannot_write_back_is_named_with_its_place(doc: object, bad: str, rnd: object) -> None:
    """'integer 99999999999999999999 is beyond 64 bits' did not say where: a config
    has hundreds of numbers. The message says the place as a JSON pointer."""
    from fleet import canonical as c

    spots: list[tuple[object, object]] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            spots.extend((v, k) for k in v)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            spots.extend((v, i) for i in range(len(v)))
            for x in v:
                walk(x)

    root = {"top": doc}
    walk(root)
    parent, key = rnd.choice(spots)  # type: ignore[attr-defined]
    parent[key] = "HERE"  # type: ignore[index]
    text = json.dumps(root, ensure_ascii=False).replace('"HERE"', bad)
    with pytest.raises(c.JSONProblem) as e:
        c.parse(text.encode())
    pointer = str(e.value).split(": ", 1)[0]
    assert pointer.startswith("at /top"), e.value
    steps = [s.replace("~1", "/").replace("~0", "~") for s in pointer[len("at /"):].split("/")]
    here: object = root
    for s in steps:
        here = here[int(s)] if isinstance(here, list) else here[s]  # type: ignore[index]
    assert here == "HERE"
