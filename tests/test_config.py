"""The config file (fleet/config.py): checked at load, errors name the file,
the key and what was expected."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import canonical, keys
from fleet.config import PASSED_KEPT, Rule, parse
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


def test_run_every_is_a_pace_in_seconds_and_absent_means_none() -> None:
    assert parse(TEMPLATE.read_bytes()).run.every is None
    for text, seconds in (("90s", 90), ("10m", 600), ("1h", 3600), ("1d", 86400), ("1h30m", 5400)):
        cfg = parse(canonical.dumps(config(run={"every": text})))
        assert cfg.run.every == seconds and cfg.run.self_dispatch is True
    assert parse(canonical.dumps(config(run={"every": "10m", "self_dispatch": False}))).run.self_dispatch is False


@pytest.mark.parametrize("raw,message", [
    (config(run={"every": "10x"}), "state/config.json: run.every: '10x' is not a duration (a number and a unit: "
                                   "90s, 10m, 1h, 1d, or 1h30m)"),
    (config(run={"every": "10"}), "state/config.json: run.every: '10' is not a duration"),
    (config(run={"every": 600}), "state/config.json: run.every: 600 is not a duration"),
    (config(run={"every": "0m"}), "state/config.json: run.every: '0m' is no time at all; a pace is at least 1s"),
    (config(budgets={"day": {"usd": -1}}), "state/config.json: at /budgets/day/usd: -1 is less than the minimum of 0"),
    (config(budgets={"month": {"tokens": -5}}), "state/config.json: at /budgets/month/tokens: -5 is less than"),
    (config(budgets={"week": {"usd": 1}}), "state/config.json: at /budgets: Additional properties are not allowed"),
    (config(run={"self_dispatch": "yes"}), "state/config.json: at /run/self_dispatch: \"yes\" is not of type"),
])
def test_a_bad_pace_or_budget_is_one_line_naming_the_file_and_the_key(raw: dict, message: str) -> None:
    with pytest.raises(FleetError) as e:
        parse(canonical.dumps(raw), "state/config.json")
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_day_and_month_budgets_are_read() -> None:
    cfg = parse(canonical.dumps(config(budgets={"day": {"usd": 5.0, "tokens": 100000}, "month": {"usd": 90}})))
    assert (cfg.day_budget.usd, cfg.day_budget.tokens, cfg.month_budget.usd) == (5.0, 100000, 90)
    assert cfg.month_budget.tokens is None


def _passed(tmp_path: Path) -> list[Path]:
    """The configs remembered as checked (the conftest points XDG_CACHE_HOME at tmp_path/cache)."""
    return sorted((tmp_path / "cache" / "fleet" / "checked").glob("config-*"))


def test_a_config_that_passed_its_check_is_remembered_by_its_bytes(tmp_path: Path) -> None:
    good = TEMPLATE.read_bytes()
    parse(good)
    assert len(_passed(tmp_path)) == 1
    parse(good)  # the same bytes: nothing new to remember
    assert len(_passed(tmp_path)) == 1
    with pytest.raises(FleetError, match="at /limits/window"):  # other bytes are checked afresh, and
        parse(canonical.dumps(config(limits={"window": 0})))  # a config that fails is never remembered
    assert len(_passed(tmp_path)) == 1
    parse(canonical.dumps(config(fleet={"name": "other"})))
    assert len(_passed(tmp_path)) == 2


def test_a_remembered_config_is_parsed_without_loading_the_schema_library(tmp_path: Path) -> None:
    code = ("import sys\nfrom fleet.config import parse\ncfg = parse(open(sys.argv[1], 'rb').read())\n"
            "print(bool(cfg.agents), 'jsonschema_rs' in sys.modules)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code, str(TEMPLATE)], capture_output=True, text=True, env=env,
                           check=True).stdout.split() for _ in range(2)]
    assert runs == [["True", "True"], ["True", "False"]]  # checked, then remembered


def test_only_as_many_configs_as_kept_are_remembered(tmp_path: Path) -> None:
    for n in range(PASSED_KEPT + 3):
        parse(canonical.dumps(config(fleet={"name": f"fleet-{n}"})))
    assert len(_passed(tmp_path)) == PASSED_KEPT


def test_a_cache_that_cannot_be_written_costs_only_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert parse(TEMPLATE.read_bytes()).agents
    with pytest.raises(FleetError, match="at /limits/window"):
        parse(canonical.dumps(config(limits={"window": 0})))


def test_a_fleet_without_agents_is_refused_by_validate_and_by_run_before_any_tick(tmp_path: Path) -> None:
    """`"agents": {}` passed validate, then every tick failed with 'none of 0 worker(s) delivered'."""
    import subprocess

    from click.testing import CliRunner

    from fleet.commands.init import init
    from fleet.main import cli

    with pytest.raises(FleetError, match=r"^state/config.json: at /agents: \{\} has less than 1 property"):
        parse(canonical.dumps(config(agents={})), "state/config.json")
    init(tmp_path / "f")
    p = tmp_path / "f" / "state" / "config.json"
    p.write_bytes(canonical.dumps({**json.loads(p.read_bytes()), "agents": {}}))
    for args in (["validate"], ["run", "--ticks", "1"]):
        if args[0] == "run":
            subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", "commit", "-qam", "no agents"],
                           cwd=tmp_path / "f", check=True)
        r = CliRunner().invoke(cli, ["-C", str(tmp_path / "f"), *args])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert "state/config.json: at /agents: {} has less than 1 property" in r.output
        assert "tick 1" not in r.output


_NAMES = ["".join(t) for n in range(1, 7) for t in itertools.product("ab-", repeat=n)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab*?[]!-", min_size=1, max_size=7))
def test_a_claimer_pattern_refused_can_match_no_name(pattern: str) -> None:
    """A claimer's name has no '[' nor ']': a pattern whose bracket fnmatch reads as
    itself ('x[a-', '[') can never match one, and is refused; a refused pattern
    never matches any name (here every name of up to 6 of 'a', 'b', '-')."""
    import fnmatch
    import re

    from fleet.config import _never_matches

    why = _never_matches(pattern)
    if why is not None:
        rx = re.compile(fnmatch.translate(pattern))
        assert not [n for n in _NAMES if rx.match(n)], (pattern, why)
    for literal in ("x[a-", "[", "a]", "[]", "ci-[0-9"):
        assert _never_matches(literal) is not None
