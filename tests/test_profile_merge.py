"""Profiles merged by meaning (fleet.profile_merge): a text of facts that two
agents edited in one tick, merged by the model through the local Messages API
server, checked, recorded in the ledger, and replayed without a model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import canonical, profile_merge
from fleet.commands.init import init
from fleet.delta import Op
from fleet.engine.conflicts import conflict_id
from tests.conftest import Fleet, run
from tests.servers.anthropic_api import AnthropicAPI, api_error, reply, text, tool_use

KEY = "sk-ant-test-" + "m" * 24
BEFORE = "# Team\n- works in UTC\n"
ADA = "# Team\n- works in UTC\n- lives in Berlin\n- prefers short answers\n"
BASIL = "# Team\n- works in UTC\n- based in Berlin, Germany\n- Prefers short answers.\n- drinks tea, not coffee\n"
GOOD = {"text": "# Team\n- works in UTC\n- lives in Berlin, Germany\n- prefers short answers\n- drinks tea, not coffee\n",
        "folded": [{"into": "lives in Berlin, Germany", "facts": ["lives in Berlin", "based in Berlin, Germany"]}]}
CID = conflict_id("profiles", "team", ("text",))
PROFILE_SCHEMA = {"type": "object", "required": ["id", "text"], "additionalProperties": False,
                  "properties": {"id": {"type": "string"}, "text": {"type": "string", "maxLength": 400}}}


@pytest.fixture
def api() -> Iterator[AnthropicAPI]:
    with AnthropicAPI() as server:
        yield server
        assert server.errors == [], server.errors


@pytest.fixture
def pf(tmp_path: Path) -> Fleet:
    """A fleet with a shared profile whose text is merged by meaning."""
    path = tmp_path / "fleet"
    init(path)
    cfg_path = path / "state" / "config.json"
    cfg = json.loads(cfg_path.read_bytes())
    cfg["collections"]["profiles"] = {"schema": "profile.schema.json", "owner": None, "others": ["set:text"]}
    cfg["policies"]["profiles/text"] = "meaning"
    cfg["run"] = {**cfg.get("run", {}), "model": "claude-test-1", "max_retries": 0, "turn_timeout_seconds": 20}
    cfg["meaning"] = {"max_chars": 300}
    cfg_path.write_bytes(canonical.dumps(cfg))
    (path / "schemas" / "profile.schema.json").write_bytes(canonical.dumps(PROFILE_SCHEMA))
    (path / "state" / "profiles").mkdir()
    (path / "state" / "profiles" / "team.json").write_bytes(canonical.dumps({"id": "team", "text": BEFORE}))
    f = Fleet(path)
    f.git.run("add", "-A")
    f.git.run("-c", "user.name=Person", "-c", "user.email=p@example.com", "commit", "-qm", "a shared profile")
    return f


def edits(f: Fleet, *versions: tuple[str, str]) -> None:
    f.push(*[f.delta(agent, Op("set", "profiles", "team", ("text",), value), worker=f"w{i}")
             for i, (agent, value) in enumerate(versions, 1)])


def profile(f: Fleet) -> str:
    return str(json.loads(f.read("state/profiles/team.json"))["text"])


def meanings(f: Fleet, tick: int = 1) -> list[dict[str, Any]]:
    return [json.loads(line) for line in f.read(f"state/ledger/{tick}/_meanings.jsonl").splitlines()]


def with_model(monkeypatch: pytest.MonkeyPatch, api: AnthropicAPI) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)


def without_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


def replay_identical(f: Fleet, monkeypatch: pytest.MonkeyPatch, api: AnthropicAPI | None = None) -> None:
    """`fleet replay --check` with no key and no server: byte-identical, and no model was asked."""
    seen = len(api.requests) if api else 0
    without_model(monkeypatch)
    out = json.loads(run(f, "replay", "--check", "--json").output)
    assert out["identical"] and out["ok"], out
    if api:
        assert len(api.requests) == seen


def test_a_good_merge_keeps_every_fact_folds_duplicates_and_replays_without_a_model(
        pf: Fleet, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    edits(pf, ("ada", ADA), ("basil", BASIL))
    api.script(reply(tool_use("merged_profile", GOOD)))
    with_model(monkeypatch, api)
    r = run(pf, "merge", "--json")
    out = json.loads(r.output)
    assert out["applied"] == 2 and out["held"] == [] and out["quarantined"] == []
    assert profile(pf) == GOOD["text"]
    # the request: both versions and the value before, the tool forced, the key never in the body
    (seen,) = api.requests
    assert seen.body["tool_choice"] == {"type": "tool", "name": "merged_profile"}
    asked = json.loads(seen.body["messages"][0]["content"])
    assert asked["before"] == BEFORE and sorted(v["by"] for v in asked["versions"]) == ["ada", "basil"]
    assert api.saw_key(KEY) and KEY not in json.dumps(seen.body)
    # recorded as an input of the tick, and named in the audit trail
    (rec,) = meanings(pf)
    assert rec["conflict"] == CID and rec["value"] == GOOD["text"] and rec["folded"] == GOOD["folded"]
    assert rec["model"] == "claude-test-1"
    # what the merge cost counts in the tick's usage, as a turn's does
    spent = json.loads(pf.read("state/fleet.json"))["last"]["usage"]
    assert spent["input_tokens"] >= rec["usage"]["input_tokens"] > 0 and rec["usage"]["cost_usd"] > 0
    assert pf.git.show("refs/heads/main", f"state/conflicts/{CID}.json") is None
    body = pf.git.text("log", "-1", "--format=%B", "refs/heads/main")
    assert f"Merged by meaning: profiles/team text ({CID}) by claude-test-1, 1 fold(s)" in body
    assert KEY not in body and KEY.encode() not in pf.read("state/ledger/1/_meanings.jsonl")
    replay_identical(pf, monkeypatch, api)
    # the audit trail reads the tick as any other: both deltas changed the profile
    trail = json.loads(run(pf, "log", "profiles/team", "--json").output)
    assert sorted(e["agent"] for e in trail if e["tick"] == 1 and e["status"] == "applied") == ["ada", "basil"]


def test_a_merge_that_drops_a_fact_is_refused_and_held_for_a_person(
        pf: Fleet, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    edits(pf, ("ada", ADA), ("basil", BASIL))
    dropped = {"text": GOOD["text"].replace("- drinks tea, not coffee\n", ""), "folded": GOOD["folded"]}
    api.script(reply(tool_use("merged_profile", dropped)))
    with_model(monkeypatch, api)
    out = json.loads(run(pf, "merge", "--json").output)
    assert out["held"] == [CID] and out["held_deltas"] == 2
    assert profile(pf) == BEFORE  # the field keeps its value; both versions wait for a person
    conflict = json.loads(pf.read(f"state/conflicts/{CID}.json"))
    assert conflict["policy"] == "meaning"
    assert "drops the fact 'drinks tea, not coffee' of basil's version" in conflict["reason"]
    assert sorted(c["value"] for c in conflict["candidates"]) == sorted([ADA, BASIL])
    (rec,) = meanings(pf)
    assert "value" not in rec and "drops the fact" in rec["rejected"]
    replay_identical(pf, monkeypatch, api)
    # a person decides through the existing machinery (a merged conflict pull request puts this file
    # on main): the resolution applies at the next merge
    pf.git.run("reset", "-q", "--hard", "refs/heads/main")
    (pf.path / "state" / "resolutions").mkdir()
    decision = {"conflict": CID, "value": GOOD["text"], "by": "a person"}
    (pf.path / "state" / "resolutions" / f"{CID}.json").write_bytes(canonical.dumps(decision))
    pf.git.run("add", "-A")
    pf.git.run("-c", "user.name=Person", "-c", "user.email=p@example.com", "commit", "-qm", "decide the profile")
    run(pf, "merge", "--allow-empty")
    assert profile(pf) == GOOD["text"]
    assert pf.git.show("refs/heads/main", f"state/conflicts/{CID}.json") is None
    replay_identical(pf, monkeypatch)


@pytest.mark.parametrize("answer,why", [
    (reply(text("Here is the merged profile, in prose.")), "without calling merged_profile"),
    (api_error(), "the model's merge failed: InternalServerError"),
    (reply(tool_use("merged_profile", {"text": GOOD["text"] + "- " + "x" * 300 + "\n", "folded": GOOD["folded"]})),
     "over meaning.max_chars (300)"),
    (reply(tool_use("merged_profile", {"text": GOOD["text"], "folded": [{"into": "lives on the moon", "facts": []}]})),
     "a line the merged text does not keep"),
    (reply(tool_use("merged_profile", {"text": 12, "folded": []})), "does not match the merged_profile schema"),
])
def test_a_model_failure_or_a_bad_answer_is_held(pf: Fleet, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch,
                                                 answer: Any, why: str) -> None:
    edits(pf, ("ada", ADA), ("basil", BASIL))
    api.script(answer)
    with_model(monkeypatch, api)
    out = json.loads(run(pf, "merge", "--json").output)
    assert out["held"] == [CID] and profile(pf) == BEFORE
    assert why in json.loads(pf.read(f"state/conflicts/{CID}.json"))["reason"]
    replay_identical(pf, monkeypatch, api)


def test_the_schema_is_a_check_too(pf: Fleet, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """meaning.max_chars allows it, the collection's schema (maxLength 400) does not."""
    cfg = json.loads(pf.read("state/config.json"))
    cfg["meaning"]["max_chars"] = 4000
    (pf.path / "state" / "config.json").write_bytes(canonical.dumps(cfg))
    pf.git.run("-c", "user.name=Person", "-c", "user.email=p@example.com", "commit", "-qam", "longer profiles")
    edits(pf, ("ada", ADA), ("basil", BASIL))
    long = {"text": GOOD["text"] + "- " + "y" * 390 + "\n", "folded": GOOD["folded"]}
    api.script(reply(tool_use("merged_profile", long)))
    with_model(monkeypatch, api)
    out = json.loads(run(pf, "merge", "--json").output)
    assert out["held"] == [CID] and out["quarantined"] == []
    assert "would make state/profiles/team.json invalid" in json.loads(pf.read(f"state/conflicts/{CID}.json"))["reason"]
    replay_identical(pf, monkeypatch, api)


def test_no_model_holds_the_edits_for_a_person(pf: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    edits(pf, ("ada", ADA), ("basil", BASIL))
    without_model(monkeypatch)
    out = json.loads(run(pf, "merge", "--json").output)
    assert out["held"] == [CID]
    assert "no model to merge with: no ANTHROPIC_API_KEY" in json.loads(pf.read(f"state/conflicts/{CID}.json"))["reason"]
    replay_identical(pf, monkeypatch)


def test_one_version_needs_no_model(pf: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    edits(pf, ("ada", ADA))
    without_model(monkeypatch)
    run(pf, "merge")
    assert profile(pf) == ADA
    assert pf.git.show("refs/heads/main", "state/ledger/1/_meanings.jsonl") is None


def test_a_record_for_other_versions_does_not_apply() -> None:
    """The engine takes a recorded merge only for the exact versions it answered."""
    rec = {"conflict": CID, "inputs": profile_merge.inputs_key(BEFORE, [("d1", ADA), ("d2", BASIL)]), "value": "x"}
    assert profile_merge.decided(rec, BEFORE, [("d2", BASIL), ("d1", ADA)]) == ("x", "")
    chosen, why = profile_merge.decided(rec, BEFORE, [("d1", ADA), ("d2", BASIL + "- more\n")])
    assert chosen is profile_merge._MISSING and "for other versions" in why


# -- the check, as a property ---------------------------------------------------

_fact = st.text(alphabet="abcdefghij ", min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_fact, min_size=1, max_size=5), min_size=2, max_size=3), st.data())
def test_every_fact_kept_passes_and_any_fact_dropped_fails(versions: list[list[str]], data: st.DataObject) -> None:
    texts = [(f"a{i}", "".join(f"- {x}\n" for x in v)) for i, v in enumerate(versions)]
    every = list(dict.fromkeys(profile_merge.norm(x) for v in versions for x in v))
    merged = "".join(f"- {x}\n" for x in every)
    value, why = profile_merge.check({"text": merged, "folded": []}, texts, 10_000)
    assert value == merged, why
    gone = data.draw(st.sampled_from(every))
    rest = [x for x in every if x != gone]
    if rest:  # drop it: refused, naming it
        value, why = profile_merge.check({"text": "".join(f"- {x}\n" for x in rest), "folded": []}, texts, 10_000)
        assert value is None and "drops the fact" in why
        # fold it into a kept fact instead: accepted
        folded = [{"into": rest[0], "facts": [gone]}]
        value, why = profile_merge.check({"text": "".join(f"- {x}\n" for x in rest), "folded": folded}, texts, 10_000)
        assert value is not None, why


# -- on GitHub Actions: the model runs in a job that cannot write main ------------------

def test_a_job_without_a_write_token_asks_the_model_and_the_merge_job_checks_its_answers_again(
        pf: Fleet, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    edits(pf, ("ada", ADA), ("basil", BASIL))
    api.script(reply(tool_use("merged_profile", GOOD)))
    with_model(monkeypatch, api)
    answers = tmp_path / "answers.jsonl"
    before = pf.main()
    out = json.loads(run(pf, "merge", "--propose-meanings", str(answers), "--json").output)
    assert not out["published"] and pf.main() == before  # a dry run: nothing written to main
    (proposed,) = [json.loads(line) for line in answers.read_bytes().splitlines()]
    assert proposed["value"] == GOOD["text"] and KEY not in answers.read_text()
    # the merge job holds no model key and calls no model
    without_model(monkeypatch)
    seen = len(api.requests)
    out = json.loads(run(pf, "merge", "--meanings", str(answers), "--json").output)
    assert out["published"] and out["held"] == [] and profile(pf) == GOOD["text"] and len(api.requests) == seen
    replay_identical(pf, monkeypatch, api)


def test_answers_handed_over_are_checked_again(pf: Fleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    edits(pf, ("ada", ADA), ("basil", BASIL))
    without_model(monkeypatch)
    key = profile_merge.inputs_key(BEFORE, sorted((b["id"], v) for b, v in _pushed(pf)))
    forged = {"conflict": CID, "inputs": key, "value": "- works in UTC\n", "folded": []}
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(canonical.dumps_line(forged) + b"\n")
    out = json.loads(run(pf, "merge", "--meanings", str(answers), "--json").output)
    assert out["held"] == [CID] and profile(pf) == BEFORE
    assert "drops the fact 'lives in Berlin' of ada's version" in json.loads(
        pf.read(f"state/conflicts/{CID}.json"))["reason"]
    replay_identical(pf, monkeypatch)


def test_a_malformed_answers_file_is_one_line_naming_it(pf: Fleet, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    edits(pf, ("ada", ADA), ("basil", BASIL))
    without_model(monkeypatch)
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(b'{"conflict": "c-0000000000000000", "inputs": "x", "inputs": "y"}\n')
    before = pf.main()
    r = run(pf, "merge", "--meanings", str(answers), code=1)
    assert r.output.count("\n") == 1 and f"{answers}:1" in r.output and "duplicate" in r.output.lower()
    assert pf.main() == before and len(pf.branches()) == 2  # nothing merged, nothing lost


def _pushed(f: Fleet) -> list[tuple[dict[str, Any], str]]:
    """The deltas on the worker branches, with the text each sets."""
    out = []
    for ref in f.branches():
        for path in f.git.text("ls-tree", "-r", "--name-only", ref, "deltas/").split():
            body = json.loads(f.git.show(ref, path) or b"{}")
            out.append((body, body["ops"][0]["value"]))
    return out


@pytest.mark.parametrize("answer,why", [
    ({"text": "- a\n", "folded": [{"into": "a", "facts": ["b" * 900] * 100}]}, "over 65536"),
    ({"text": "- a\ud800\n", "folded": []}, "not JSON fleet can keep"),
    ({"text": "- a\n", "folded": [], "extra": 1}, "does not match the merged_profile schema"),
    ("just text", "does not match the merged_profile schema"),
])
def test_hostile_answers_are_refused_with_the_rule(answer: Any, why: str) -> None:
    value, problem = profile_merge.check(answer, [("ada", "- a\n")], 4000)
    assert value is None and why in problem


# -- the engine with recorded merges: same inputs, same state, in any order ------------

@settings(max_examples=25, deadline=None)
@given(st.permutations(range(3)), st.lists(st.sampled_from(["- works in UTC", "- likes tea", "- lives in Berlin",
                                                          "- Likes tea."]), min_size=1, max_size=3, unique=True))
def test_a_recorded_merge_gives_the_same_tick_whatever_order_the_deltas_arrive_in(
        tmp_path_factory: pytest.TempPathFactory, order: list[int], extra: list[str]) -> None:
    from fleet.delta import Arrival, file_path
    from fleet.engine import merge_tick, replay_tick
    from fleet.state import MemorySnapshot

    root = tmp_path_factory.mktemp("pm") / "fleet"
    init(root)
    cfg = json.loads((root / "state" / "config.json").read_bytes())
    cfg["collections"]["profiles"] = {"schema": "profile.schema.json", "owner": None, "others": ["set:text"]}
    cfg["policies"]["profiles/text"] = "meaning"
    files = {p.relative_to(root).as_posix(): p.read_bytes()
             for top in ("state", "schemas") for p in sorted((root / top).rglob("*")) if p.is_file()}
    files["state/config.json"] = canonical.dumps(cfg)
    files["schemas/profile.schema.json"] = canonical.dumps(PROFILE_SCHEMA)
    files["state/profiles/team.json"] = canonical.dumps({"id": "team", "text": BEFORE})
    base = MemorySnapshot(files)
    f = Fleet(root)
    texts = [BEFORE + "\n".join(extra[: i + 1]) + "\n" for i in range(3)]
    bodies = [f.delta(a, Op("set", "profiles", "team", ("text",), t), worker=f"w{i + 1}")
              for i, (a, t) in enumerate(zip(["ada", "basil", "cleo"], texts, strict=True))]
    arrivals = [Arrival(f"refs/heads/fleet/t1/{b['worker']}", file_path(b), canonical.dumps(b)) for b in bodies]
    first = merge_tick(base, arrivals)
    (c,) = profile_merge.meaning_conflicts(base, first) if len({*texts}) > 1 else (None,)
    if c is None:
        return  # one text: nothing to merge
    merged = "".join(f"- {x}\n" for x in dict.fromkeys(profile_merge.norm(x) for t in texts
                                                         for x in profile_merge.facts(t)))
    record = {**profile_merge._record(c), "value": merged, "folded": []}
    results = [merge_tick(base, [arrivals[i] for i in perm], (), [record]) for perm in (order, [0, 1, 2])]
    assert results[0].writes == results[1].writes and results[0].held == []
    assert json.loads(results[0].writes["state/profiles/team.json"])["text"] == merged
    again = replay_tick(base, results[0].applied, results[0].quarantined, (), [record])
    assert again.writes == results[0].writes
