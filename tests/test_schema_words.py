"""A value that fits none of a schema's alternatives (anyOf, oneOf) is told what each
alternative asked, not only that it fits none."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.schemas import compile_schema, first_error

_KEYS = st.text(st.sampled_from("abcdefgh_"), min_size=1, max_size=6)
_TYPES = ["string", "integer", "array", "boolean", "null"]


@st.composite
def forms(draw: Any) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(2, 4))):
        if draw(st.booleans()):
            out.append({"required": [draw(_KEYS)]})
        else:
            out.append({"type": draw(st.sampled_from(_TYPES))})
    return out


@settings(max_examples=40, deadline=None)
@given(forms=forms(), keyword=st.sampled_from(["anyOf", "oneOf"]), nested=st.booleans())
def test_a_value_that_fits_no_form_is_told_what_each_form_asked(forms: list[dict[str, Any]], keyword: str,
                                                                  nested: bool) -> None:
    schema: dict[str, Any] = {keyword: forms}
    instance: Any = {"x": 1}  # an object with none of the keys: no form of these fits it
    if nested:
        schema, instance = {"type": "object", "properties": {"meta": schema}}, {"meta": instance}
    said = first_error(compile_schema(schema, "test.schema.json"), instance)
    assert said is not None and "not valid under any" not in said, said
    assert said.startswith("at /meta: " if nested else "at /: "), said
    assert f"none of the {len(forms)} forms" in said, said
    for form in forms:
        asked = f'"{form["required"][0]}" is a required property' if "required" in form else f'"{form["type"]}"'
        assert asked in said, (form, said)
