"""`fleet resolve CONFLICT --choose CANDIDATE | --value JSON`: a person's decision
without GitHub, recorded on the fleet's main as a merged pull request's would
be, applied (and said so) by the next merge; bad input is one line naming it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run

from fleet import canonical
from fleet.commands.run import ensure_origin
from fleet.delta import Op
from fleet.git import Git

TITLE = ("title",)


def held(fleet: Fleet, *values: str, tick: int = 1) -> dict[str, Any]:
    """ada sets her post's title differently from several workers: held."""
    fleet.push(*[fleet.delta("ada", Op("set", "posts", "ada-1", TITLE, v), tick=tick, worker=f"w{i + 1}",
                             utc=f"2026-11-22T10:00:0{i}.000000Z") for i, v in enumerate(values)])
    [cid] = json.loads(run(fleet, "merge", "--json").stdout)["held"]
    return json.loads(fleet.read(f"state/conflicts/{cid}.json"))


def title(fleet: Fleet, ref: str = "refs/heads/main") -> str:
    return json.loads(fleet.git.show(ref, "state/posts/ada-1.json") or b"")["title"]


def identity(path: Path) -> None:
    subprocess.run(["git", "config", "user.name", "Rosa Person"], cwd=path, check=True)
    subprocess.run(["git", "config", "user.email", "rosa@example.com"], cwd=path, check=True)


@pytest.mark.parametrize("how", ["candidate", "base", "value"])
def test_a_decision_is_recorded_on_main_and_applied_by_the_next_merge(fleet: Fleet, how: str) -> None:
    identity(fleet.path)
    c = held(fleet, "First", "Second", "Third")
    before = title(fleet)
    first = c["candidates"][0]["delta"]
    args = {"candidate": ["--choose", first], "base": ["--choose", "base"], "value": ["--value", '"By hand"']}[how]
    r = run(fleet, "resolve", c["id"], *args, "--json")
    out = json.loads(r.stdout)
    assert out["path"] == f"state/resolutions/{c['id']}.json" and out["replaced"] is False
    # as a merged pull request: a person's commit on main, the engine's files untouched
    commit = fleet.main()
    assert out["commit"] == commit
    assert fleet.git.text("log", "-1", "--format=%an <%ae>", commit) == "Rosa Person <rosa@example.com>"
    assert fleet.git.text("diff", "--name-only", f"{commit}^", commit) == out["path"]
    assert title(fleet) == before  # nothing is decided until the merge applies it
    s = json.loads(run(fleet, "status", "--json").stdout)
    assert [x["decided"] for x in s["open_conflicts"]] == [True]
    assert s["outside"][0]["commit"] == commit and s["outside"][0]["refused"] == []

    m = run(fleet, "merge")
    assert f"decided: {c['id']} (a person's resolution applied)" in m.stdout
    assert title(fleet) == {"candidate": "First", "base": before, "value": "By hand"}[how]
    assert f"state/conflicts/{c['id']}.json" not in fleet.git.ls_tree("refs/heads/main", "state/")
    decided = json.loads(fleet.read("state/ledger/2/_resolutions.jsonl"))
    assert decided["by"] == "fleet resolve by Rosa Person <rosa@example.com>"
    run(fleet, "replay", "--check")


def test_a_second_decision_replaces_the_pending_one(fleet: Fleet) -> None:
    c = held(fleet, "First", "Second")
    run(fleet, "resolve", c["id"], "--choose", "base")
    r = run(fleet, "resolve", c["id"], "--value", '"Later thought"')
    assert r.stdout.startswith(f"replaced the pending decision with state/resolutions/{c['id']}.json")
    run(fleet, "merge")
    assert title(fleet) == "Later thought"


@pytest.mark.parametrize("args, code, says", [
    (["c-0000000000000000", "--choose", "base"], 1, "c-0000000000000000: no open conflict with this id"),
    (["../../etc", "--choose", "base"], 1, "../../etc: no open conflict with this id"),
    (["{cid}", "--choose", "t9-w9-nobody"], 1, "t9-w9-nobody: not a candidate of conflict {cid}"),
    (["{cid}", "--value", "{not json"], 1, "--value: "),
    (["{cid}", "--value", '"a"'], 1, "--value"),
    (["{cid}", "--value", '""'], 1, "would make state/posts/ada-1.json invalid"),
    (["{cid}", "--value", "1e999"], 1, "--value: "),
    (["{cid}"], 2, "give exactly one of --choose"),
    (["{cid}", "--choose", "base", "--value", "1"], 2, "give exactly one of --choose"),
])
def test_bad_input_is_one_line_and_writes_nothing(fleet: Fleet, args: list[str], code: int, says: str) -> None:
    c = held(fleet, "First", "Second")
    head = fleet.main()
    args = [a.replace("{cid}", c["id"]) for a in args]
    if args[1:] == ["--value", '"a"']:
        args[2] = '{"a": 1, "a": 2}'  # a duplicate key: refused by the strict reader
    r = run(fleet, "resolve", *args, code=code)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and says.replace("{cid}", c["id"]) in lines[0], r.output
    assert fleet.main() == head


def test_json_output_on_error(fleet: Fleet) -> None:
    r = run(fleet, "resolve", "c-nope", "--choose", "base", "--json", code=1)
    assert json.loads(r.stdout)["exit"] == 1


# -- the fleet's main in the embedded origin that `fleet run` makes -----------------
def embedded(fleet: Fleet) -> Git:
    url, created = ensure_origin(fleet.path, None)
    assert created
    return Git(fleet.path / ".git" / "fleet" / "origin.git")


def push_to(fleet: Fleet, origin: Git, *bodies: dict[str, Any]) -> None:
    fleet.push(*bodies)
    for ref in fleet.branches():
        fleet.git.run("push", "--quiet", str(origin.path), f"{ref}:{ref}")
        fleet.git.run("update-ref", "-d", ref)


def test_with_the_embedded_origin_resolve_writes_the_fleets_main(fleet: Fleet) -> None:
    origin = embedded(fleet)
    push_to(fleet, origin, *[fleet.delta("ada", Op("set", "posts", "ada-1", TITLE, v), worker=f"w{i}")
                             for i, v in enumerate(("One", "Two"))])
    [cid] = json.loads(run(fleet, "merge", "--json").stdout)["held"]
    mine = fleet.main()
    r = run(fleet, "resolve", cid, "--value", '"Three"')
    assert "published to file://" in r.stdout
    assert fleet.main() == mine  # your checkout and branch are not touched
    m = run(fleet, "merge")
    assert f"decided: {cid}" in m.stdout
    assert json.loads(origin.show("refs/heads/main", "state/posts/ada-1.json") or b"")["title"] == "Three"


def decided_on_your_main(fleet: Fleet, choice: dict[str, Any]) -> str:
    """A conflict held on the embedded origin, and a person's resolution file for
    it committed by hand on their own main (up to date with the fleet's)."""
    origin = embedded(fleet)
    push_to(fleet, origin, *[fleet.delta("ada", Op("set", "posts", "ada-1", TITLE, v), worker=f"w{i}")
                             for i, v in enumerate(("One", "Two"))])
    [cid] = json.loads(run(fleet, "merge", "--json").stdout)["held"]
    subprocess.run(["git", "merge", "--ff-only", "-q", "refs/fleet/origin/main"], cwd=fleet.path, check=True)
    rel = f"state/resolutions/{cid}.json"
    (fleet.path / rel).parent.mkdir(parents=True, exist_ok=True)
    (fleet.path / rel).write_bytes(canonical.dumps({"conflict": cid, **choice, "by": "me"}))
    subprocess.run(["git", "add", rel], cwd=fleet.path, check=True)
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qm", "decide"], cwd=fleet.path,
                   check=True)
    return cid


def test_a_hand_written_decision_on_your_main_is_applied_by_fleet_merge_and_said(fleet: Fleet) -> None:
    """Issue 14: it was ignored by fleet merge (exit 3), then adopted silently by fleet run."""
    cid = decided_on_your_main(fleet, {"choose": "base"})
    m = run(fleet, "merge")
    assert "your main's 1 new commit(s) are now the fleet's main" in m.stderr
    assert f"decided: {cid} (a person's resolution applied)" in m.stdout
    assert title(fleet, "refs/fleet/origin/main") == "Every invariant deserves a test that can fail"


def test_fleet_run_says_it_applied_a_decision_from_your_main(fleet: Fleet) -> None:
    """Issue 14: `fleet run` adopted a hand-written decision without saying it decided anything."""
    from conftest import fleet_cli

    cid = decided_on_your_main(fleet, {"value": "Mine"})
    p = fleet_cli(fleet.path, "run", "--ticks", "1", "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert f"decided {cid} (a person's resolution applied)" in p.stdout
    assert title(fleet, "refs/fleet/origin/main") == "Mine"
    data = json.loads(fleet_cli(fleet.path, "run", "--ticks", "1", "--workers", "2", "--json").stdout)
    t = data["ticks"][0]
    assert data["applied"] + data["noop"] + data["held_deltas"] > 0 and data["tokens"] > 0
    assert set(t) >= {"applied", "noop", "held_deltas", "quarantined", "held", "resolved", "tokens", "cost_usd"}


def test_resolve_racing_merges_on_one_remote_is_applied_once(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    """A decision and merges pushed at once from other clones: the compare-and-swap
    lets each land on the main it read; the decision is applied exactly once, every
    delta too, and the history replays."""
    import sys

    fleet, bare = origin_fleet
    push_to(fleet, Git(bare), *[fleet.delta("ada", Op("set", "posts", "ada-1", TITLE, v), worker=f"w{i}")
                                for i, v in enumerate(("One", "Two"))])
    [cid] = json.loads(run(fleet, "merge", "--json").stdout)["held"]
    clones = []
    for name in ("a", "b", "c"):
        subprocess.run(["git", "clone", "-q", str(bare), str(tmp_path / name)], check=True)
        clones.append(tmp_path / name)
    scores = [fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=2, worker=w)
              for w in ("w8", "w9")]
    push_to(fleet, Git(bare), *scores)
    procs = [subprocess.Popen([sys.executable, "-m", "fleet", "resolve", cid, "--value", '"Decided"'], cwd=clones[0],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE),
             *[subprocess.Popen([sys.executable, "-m", "fleet", "merge"], cwd=c, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for c in clones[1:]]]
    results = [(p.wait(), p.stderr.read().decode()) for p in procs]
    assert results[0][0] == 0, results[0][1]
    assert all(code in (0, 3) for code, _ in results[1:]), results  # 3: the other merge took the deltas
    while fleet.fleet("merge").exit_code == 0:  # what is left: the decision, or deltas
        pass
    origin = Git(bare)
    doc = json.loads(origin.show("refs/heads/main", "state/posts/ada-1.json") or b"")
    assert doc["title"] == "Decided" and doc["score"] == 2
    assert f"state/conflicts/{cid}.json" not in origin.ls_tree("refs/heads/main", "state/")
    decided = origin.text("log", "--format=%B", "refs/heads/main").count("Fleet-Resolved: 1")
    assert decided == 1
    run(fleet, "replay", "--check")


def test_a_value_holding_a_secret_is_refused_not_stored_masked(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit is redacted, so a key in --value would land as "[REDACTED]" and
    the next merge would set the field to that: refused, naming --value, nothing written."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    secret = "sk-ant-test-SECRET123"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    c = held(fleet, "First", "Second")
    head = fleet.main()
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(before=text, after=text, nest=st.sampled_from(["str", "list", "obj", "url", "escaped"]))
    def check(before: str, after: str, nest: str) -> None:
        inner = before + secret + after
        value: Any = {"str": inner, "list": [1, inner], "obj": {"k": inner},
                      "url": f"https://me:pw{len(before)}@example.com/{after}", "escaped": None}[nest]
        given_ = json.dumps(value) if nest != "escaped" else '"' + "".join(f"\\u{ord(ch):04x}" for ch in secret) + '"'
        r = run(fleet, "resolve", c["id"], "--value", given_, code=1)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fleet: --value: holds ") and "refused" in lines[0], r.output
        assert secret not in r.output
        assert ("ANTHROPIC_API_KEY" in lines[0]) == (nest != "url")
        assert fleet.main() == head

    check()
    run(fleet, "resolve", c["id"], "--value", json.dumps("sk-ant-test"))  # not the key: recorded as given
    run(fleet, "merge")
    assert title(fleet) == "sk-ant-test"


@pytest.mark.parametrize("args", [["--choose", "base"], ["--value", '"Same thought"']])
def test_the_same_decision_twice_before_the_merge_commits_nothing_and_says_so(fleet: Fleet, args: list[str]) -> None:
    c = held(fleet, "First", "Second")
    first = json.loads(run(fleet, "resolve", c["id"], *args, "--json").stdout)
    head = fleet.main()
    assert first["already"] is False and first["commit"] == head
    r = run(fleet, "resolve", c["id"], *args)
    assert r.stdout.strip() == (f"already recorded: state/resolutions/{c['id']}.json on the fleet's main "
                                f"(commit {head[:12]}) decides the same; nothing to do")
    assert fleet.main() == head
    assert json.loads(run(fleet, "resolve", c["id"], *args, "--json").stdout)["already"] is True
    run(fleet, "merge")
    assert title(fleet) == ("Same thought" if args[0] == "--value" else c["base"])


@pytest.mark.parametrize("where", ["remote", "local"])
def test_resolve_publishes_the_field_index_of_the_main_it_makes(origin_fleet: tuple[Fleet, Path], where: str) -> None:
    """fleet resolve moves main: the field index of that main goes with it, in the
    same atomic push (or ref transaction) as the merge's, so the next workers read
    it instead of falling back to every document."""
    from conftest import fleet_cli

    from fleet import fieldindex, world
    from fleet.state import GitSnapshot

    fleet, bare = origin_fleet
    if where == "local":  # no remote: main and the index are refs of this repository
        subprocess.run(["git", "remote", "remove", "origin"], cwd=fleet.path, check=True)
        holder = fleet.git
        push = fleet.push
    else:
        holder = Git(bare)

        def push(*bodies: dict[str, Any]) -> None:
            push_to(fleet, holder, *bodies)
    push(*[fleet.delta("ada", Op("set", "posts", "ada-1", TITLE, v), worker=f"w{i}") for i, v in enumerate(("A", "B"))])
    [cid] = json.loads(run(fleet, "merge", "--json").stdout)["held"]
    before = holder.rev_parse(f"refs/heads/{fieldindex.BRANCH}")
    assert before is not None  # the merge published one
    out = json.loads(run(fleet, "resolve", cid, "--value", '"Decided"', "--json").stdout)
    main = holder.rev_parse("refs/heads/main")
    assert main == out["commit"]
    index = holder.rev_parse(f"refs/heads/{fieldindex.BRANCH}")
    assert index is not None and index != before
    found, why = fieldindex.open_index(holder, index, main)
    assert found is not None, why
    snap = GitSnapshot(holder, main)
    spec = world.load(snap.config, snap.read).prompt
    fields, orders = fieldindex.fields_of(spec, snap.config), fieldindex.orders_of(spec, snap.config)
    assert holder.commit_tree(index) == holder.commit_tree(
        fieldindex.build(holder, main, snap.config, fields, None, orders))
    # and the next worker reads it
    url = str(bare) if where == "remote" else str(fleet.path)
    p = fleet_cli(fleet.path, "work", "--worker", "1", "--workers", "2", "--remote", url, "--provider", "offline",
                  "--outbox", str(fleet.path.parent / "outbox"), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["index"] == "read"
