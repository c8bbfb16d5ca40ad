"""The config file (fleet/config.py): checked at load, errors name the file,
the key and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet import canonical, keys
from fleet.config import Rule, parse
from fleet.errors import FleetError

TEMPLATE = Path(__file__).resolve().parents[1] / "state" / "config.json"


def config(**change: object) -> dict:
    raw = json.loads(TEMPLATE.read_bytes())
    raw.update(change)
    return raw


def test_the_shipped_config_parses() -> None:
    cfg = parse(TEMPLATE.read_bytes())
    assert cfg.agents and cfg.collections and cfg.limits.window >= 1


@pytest.mark.parametrize("raw,rule", [
    (config(limits={"window": 0}), "at /limits/window"),
    (config(limits={"window": 2.0}), "not an integer in the JSON text"),
    (config(unknown=1), "(schemas/config.schema.json)"),
    (config(redact=["not a name!"]), "at /redact/0"),
])
def test_a_bad_config_names_the_file_the_key_and_the_rule(raw: dict, rule: str) -> None:
    with pytest.raises(FleetError) as e:
        parse(canonical.dumps(raw), "state/config.json")
    assert str(e.value).startswith("state/config.json: ") and rule in str(e.value)


def test_a_reserved_collection_name_is_refused() -> None:
    raw = config()
    raw["collections"]["ledger"] = next(iter(raw["collections"].values()))
    with pytest.raises(FleetError, match="'ledger' is reserved"):
        parse(canonical.dumps(raw))


def test_duplicate_keys_in_the_config_are_refused() -> None:
    data = TEMPLATE.read_bytes().replace(b'{', b'{"limits": {}, ', 1)
    with pytest.raises(FleetError, match="duplicate key 'limits'"):
        parse(data)


def test_redact_names_variables_whose_values_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIN_SETTING", "value-of-the-setting")
    assert "value-of-the-setting" in keys.redact("x value-of-the-setting")
    parse(canonical.dumps(config(redact=["PLAIN_SETTING"])))
    assert keys.redact("x value-of-the-setting") == "x [REDACTED]"


@pytest.mark.parametrize("text,op,path,value,allowed", [
    ("incr:score", "incr", ("score",), 1, True),
    ("incr:score", "incr", ("karma",), 1, False),
    ("add:members@self", "add", ("members",), "ada", True),
    ("add:members@self", "add", ("members",), "bob", False),
    ("set:profile.*", "set", ("profile", "bio"), "x", True),
    ("set", "set", ("anything", "at", "all"), "x", True),
])
def test_authority_rules(text: str, op: str, path: tuple, value: object, allowed: bool) -> None:
    assert Rule.parse(text).allows(op, path, value, "ada") is allowed
