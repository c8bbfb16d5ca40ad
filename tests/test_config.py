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


@given(st.sampled_from(["main", "fleet", "head"]).flatmap(
    lambda n: st.lists(st.booleans(), min_size=len(n), max_size=len(n)).map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(n, up, strict=True)))))
@settings(max_examples=20)
def test_a_bus_branch_git_cannot_keep_beside_the_fleets_own_is_refused(name: str) -> None:
    """bus.branch "main" passed validate; then every message push was refused by git
    ('refs/heads/main' exists), retried for two minutes as a lost race, and messages
    sent from ticks were never delivered. Names the fleet's branches take are refused."""
    with pytest.raises(FleetError, match=f"bus.branch {name!r} is taken"):
        parse(canonical.dumps(config(bus={"branch": name})), "state/config.json")


@pytest.mark.parametrize("name", ["fleet-bus", "mainline", "fleets", "bus", "Main-bus"])
def test_a_bus_branch_of_its_own_is_taken(name: str) -> None:
    assert parse(canonical.dumps(config(bus={"branch": name}))).bus.branch == name


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


# -- every number of the config has a bound -----------------------------------------
#
# A number without a maximum passed validate and overflowed later: budgets.day.usd =
# 1e308 made plan, status and run fail with "internal error: OverflowError" (money is
# counted in integer micro-dollars), a price of 1e308 failed every turn, a price of
# 1e300 gave every delta a cost_usd the delta schema refuses, and run.deadline_seconds
# = 1e-300 failed every tick. The tests below read the schema itself, so a number
# added later without a bound fails here.

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "config.schema.json").read_bytes())
DELTA_SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "delta.schema.json").read_bytes())
INT64 = (-(2 ** 63), 2 ** 63 - 1)


def _is_number(node: dict) -> bool:
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return "integer" in kinds or "number" in kinds


def _every_node(node: object, at: str = ""):
    """Every schema object in the document, reachable or not ($defs too), with where it is."""
    if isinstance(node, dict):
        yield at, node
        for k, v in node.items():
            yield from _every_node(v, f"{at}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _every_node(v, f"{at}/{i}")


def _resolve(node: dict) -> dict:
    ref = node.get("$ref")
    return _resolve(SCHEMA["$defs"][ref.rsplit("/", 1)[-1]]) if ref else node


def numbers(node: dict = SCHEMA, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict]]:
    """(config path, schema) of every number a config can hold outside a list; '*' stands
    for a name under an object of names (agents, models, collections)."""
    node = _resolve(node)
    if _is_number(node):
        return [(path, node)]
    out = []
    for name, sub in node.get("properties", {}).items():
        out += numbers(sub, (*path, name))
    if isinstance(node.get("additionalProperties"), dict):
        out += numbers(node["additionalProperties"], (*path, "*"))
    return out


def bounds(node: dict) -> tuple[float, float]:
    lo = node["minimum"] if "minimum" in node else node["exclusiveMinimum"]
    hi = node["maximum"] if "maximum" in node else node["exclusiveMaximum"]
    return lo, hi


def test_every_number_in_the_config_schema_has_a_minimum_and_a_maximum_within_64_bits() -> None:
    found = [(at, node) for at, node in _every_node(SCHEMA) if _is_number(node)]
    assert len(found) >= 30  # the walk sees the schema's numbers ($defs and inline ones)
    for at, node in found:
        assert ("minimum" in node or "exclusiveMinimum" in node) and ("maximum" in node or "exclusiveMaximum" in node), at
        lo, hi = bounds(node)
        assert INT64[0] <= lo < hi <= INT64[1], at
    # each reachable number is among them: the walk of what a config holds misses none
    assert {id(n) for _, n in numbers()} <= {id(n) for _, n in found}
    assert len(numbers()) >= 30


def test_money_and_tokens_bounds_fit_what_the_code_counts_and_the_delta_schema_takes() -> None:
    usage = DELTA_SCHEMA["properties"]["meta"]["properties"]["usage"]["properties"]
    max_cost = usage["cost_usd"]["maximum"]
    by_path = dict(numbers())
    budgets = [(p, n) for p, n in by_path.items() if p[-1] in ("usd", "tokens") and ("budgets" in p or "budget" in p)]
    assert len(budgets) == 10  # agent, tick, day, month, an agent's own: tokens and usd each
    for p, n in budgets:
        if p[-1] == "usd":  # counted in integer micro-dollars
            assert n["maximum"] * 1_000_000 < INT64[1], p
        else:
            assert n["maximum"] < INT64[1], p
    prices = [n for p, n in by_path.items() if p[0] == "models"]
    assert len(prices) == 4
    longest_answer = by_path[("run", "max_tokens")]["maximum"]
    for n in prices:  # a turn's whole answer at the highest price is a cost a delta may record
        assert n["maximum"] * longest_answer / 1_000_000 <= max_cost
    for name in ("deadline_seconds", "turn_timeout_seconds"):
        assert by_path[("run", name)]["minimum"] >= 0.1  # not 1e-300: a time a tick can take


def _set(raw: dict, path: tuple[str, ...], value: object) -> None:
    """Put ``value`` at ``path`` of a config, a '*' taken as the first name already there
    (or the model agents run on, for models)."""
    at = raw
    for i, key in enumerate(path[:-1]):
        if key == "*":
            key = next(iter(at), None) or raw.get("run", {}).get("model", "claude-sonnet-4-6")
        at = at.setdefault(key, {})
    at[path[-1]] = value


def _beyond(node: dict) -> list[object]:
    lo, hi = bounds(node)
    if "integer" in (node["type"] if isinstance(node["type"], list) else [node["type"]]):
        return [hi + 1, lo - 1, 10 ** 18 if hi < 10 ** 18 else -(10 ** 18) if lo > -(10 ** 18) else hi + 1]
    return [1e308, hi * 2 + 1, -1e308 if lo > -1e308 else hi * 2 + 1]


@pytest.mark.parametrize("path,node", numbers(), ids=lambda v: ".".join(v) if isinstance(v, tuple) else "")
def test_a_number_beyond_its_bound_is_one_line_naming_the_file_and_the_key(path: tuple[str, ...], node: dict) -> None:
    for value in _beyond(node):
        raw = config()
        _set(raw, path, value)
        with pytest.raises(FleetError) as e:
            parse(json.dumps(raw).encode(), "state/config.json")  # (beyond 64 bits fleet cannot write it)
        text = str(e.value)
        assert text.startswith("state/config.json: ") and "\n" not in text, text
        if not text.startswith("state/config.json: at /"):  # JSON fleet does not read, refused before the schema
            assert isinstance(value, int) and abs(value) >= 2 ** 63 and "64 bits" in text, text
            continue
        concrete = [k for k in text.split(":")[1].split()[-1].split("/") if k]
        assert len(concrete) == len(path) and all(p in ("*", c) for p, c in zip(path, concrete, strict=True)), text


def _value(node: dict) -> st.SearchStrategy[object]:
    lo, hi = bounds(node)
    is_int = "integer" in (node["type"] if isinstance(node["type"], list) else [node["type"]])
    inside = st.integers(int(lo), int(hi)) if is_int else st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.one_of(st.sampled_from([lo, hi]), inside)


@pytest.fixture(scope="module")
def bounded_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fleet.commands.init import init

    path = tmp_path_factory.mktemp("bounded") / "f"
    init(path)
    return path


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=list(__import__("hypothesis").HealthCheck))
@given(st.fixed_dictionaries({p: _value(n) for p, n in numbers()}))
def test_any_config_the_schema_accepts_runs_validate_plan_and_status_without_an_internal_error(
        bounded_fleet: Path, values: dict[tuple[str, ...], object]) -> None:
    """Every number at once, each at its minimum, its maximum or between: the config is
    committed on main, and validate, plan and status answer (0, 1 naming a problem, or 3)
    but never with an internal error."""
    from click.testing import CliRunner

    from fleet.main import cli

    raw = config()
    raw.update({k: v for k, v in json.loads((bounded_fleet / "state" / "config.json").read_bytes()).items()})
    for path, value in values.items():
        _set(raw, path, value)
    (bounded_fleet / "state" / "config.json").write_bytes(canonical.dumps(raw))
    subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", "commit", "-qam", "numbers at their bounds",
                    "--allow-empty"], cwd=bounded_fleet, check=True)
    for args in (["validate"], ["plan"], ["status"], ["status", "--json"]):
        r = CliRunner().invoke(cli, [args[0], "-C", str(bounded_fleet), *args[1:]])
        assert r.exit_code in (0, 1, 3), (args, r.output, r.exception)
        assert "internal error" not in r.output and "Traceback" not in r.output, (args, r.output)
        assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), (args, r.exception)


# -- validate: the prompt's fixed part fits in run.context_tokens ------------------------
#
# A 2 MB rules text passed validate; packing fits only the prompt's sections into
# run.context_tokens, so every turn sent (and paid for) 1.5 million tokens.

REPO = Path(__file__).resolve().parents[1]


def _world_files() -> dict[str, bytes]:
    return {p.relative_to(REPO).as_posix(): p.read_bytes()
            for sub in ("state", "schemas") for p in (REPO / sub).rglob("*.json") if p.is_file()}


def _fixed_part_problems(files: dict[str, bytes]) -> list[str]:
    from fleet import world

    _, problems = world.check(parse(files["state/config.json"]), files.get)
    return [p for p in problems if "fixed part" in p]


@settings(max_examples=150, deadline=None)
@given(room=st.integers(200, 3000), rules=st.integers(0, 13000), ask=st.integers(0, 400),
       as_list=st.booleans(), names=st.integers(0, 3), data=st.data())
def test_a_prompt_whose_rules_and_ask_are_beyond_context_tokens_is_refused_naming_the_file_and_key(
        room: int, rules: int, ask: int, as_list: bool, names: int, data: st.DataObject) -> None:
    files = _world_files()
    raw = json.loads(files["state/config.json"])
    raw.setdefault("run", {})["context_tokens"] = room
    files["state/config.json"] = canonical.dumps(raw)
    prompt = json.loads(files["state/prompt.json"])
    piece = data.draw(st.text(st.characters(codec="utf-8", exclude_characters="{}"), min_size=1, max_size=64))
    text = (piece * (rules // len(piece) + 1))[:rules]
    text += "{fleet}" * names  # what a template names is not counted: its own text is
    if as_list:  # rules as lines, joined by newlines
        cut = data.draw(st.integers(0, len(text)))
        lines = [text[:cut], text[cut:]]
        while "{fleet}" in lines[0][-6:] + lines[1][:6]:  # a name is not cut in two
            lines = [text, ""]
        prompt["rules"] = lines
    else:
        prompt["rules"] = text
    prompt["ask"] = "x" * ask + " {agent}"
    files["state/prompt.json"] = canonical.dumps(prompt)
    literal = (len(text) - 7 * names + (1 if as_list else 0), ask + 1)
    need = sum(-(-n // 4) for n in literal)
    found = _fixed_part_problems(files)
    if need > room:
        key = "rules" if -(-literal[0] // 4) >= -(-literal[1] // 4) else "ask"
        assert len(found) == 1 and found[0].startswith(f"state/prompt.json: {key}: the prompt's fixed part "), found
        assert f"beyond run.context_tokens ({room:,}, state/config.json)" in found[0]
    else:
        assert found == []


def test_validate_refuses_two_megabytes_of_rules_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fleet.commands.init import init
    from fleet.main import cli

    init(tmp_path / "f")
    path = tmp_path / "f" / "state" / "prompt.json"
    path.write_bytes(canonical.dumps({**json.loads(path.read_bytes()), "rules": "Be brief. " * 200_000}))
    r = CliRunner().invoke(cli, ["validate", "-C", str(tmp_path / "f")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    lines = [line for line in r.output.splitlines() if "fixed part" in line]
    assert lines == ["state/prompt.json: rules: the prompt's fixed part (rules 500,000 and ask 11 tokens, at 4 "
                     "characters a token) is beyond run.context_tokens (6,000, state/config.json), and is sent whole "
                     "every turn: shorten it, or raise run.context_tokens"], r.output
