"""`fleet status`: tick, pending worker branches, open conflicts, usage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import Fleet, run

from fleet.delta import Op


def test_status_of_a_new_fleet(fleet: Fleet) -> None:
    s = json.loads(run(fleet, "status", "--json").stdout)
    assert s["tick"] == 0 and s["main"] == fleet.main() and s["remote"] is None
    assert s["needs_you"] == [] and "needs you: nothing" in run(fleet, "status").stdout
    assert s["open_conflicts"] == [] and s["pending_branches"] == [] and s["recent_quarantine"] == []
    assert s["agents"] == 6
    r = run(fleet, "status")
    assert r.stdout.startswith(f"tick 0 (main {fleet.main()[:12]})")


def test_status_lists_conflicts_pending_branches_quarantine_and_usage(fleet: Fleet) -> None:
    usage = {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.25}
    a = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general"), meta={"model": "m", "usage": usage})
    b = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w2", meta={"usage": usage})
    q = fleet.delta("nobody", Op("incr", "posts", "ada-1", ("score",), 1), worker="w3")
    fleet.push(a, b, q)
    run(fleet, "merge")
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=2, worker="w9"))

    s = json.loads(run(fleet, "status", "--json").stdout)
    assert s["tick"] == 1
    assert s["pending_branches"] == ["fleet/t2/w9"]
    [c] = s["open_conflicts"]
    assert c["doc"] == "posts/ada-1" and c["path"] == "channel" and c["candidates"] == 2 and c["opened_tick"] == 1
    assert c["id"].startswith("c-")
    assert fleet.read(f"state/conflicts/{c['id']}.json")
    assert s["recent_quarantine"] == [{"tick": 1, "path": f"deltas/w3/s3/{q['id']}.json",
                                       "reason": "agent 'nobody' is not in state/config.json agents",
                                       "delta": q["id"], "agent": "nobody", "worker": "w3"}]
    # the held deltas are not counted as applied: each delta is counted once
    assert s["deltas"] == {"applied": 0, "noop": 0, "failed": 0, "held": 2, "quarantined": 1, "conflicts": 1, "resolved": 0}
    assert c["decide"] == f"fleet resolve {c['id']} --choose {b['id'] if b['utc'] > a['utc'] else a['id']}"
    assert {x["value"] for x in c["choices"]} == {"general", "ideas"} and c["decided"] is False
    assert s["merged_utc"] and s["age_seconds"] >= 0
    assert s["provider"] == {"configured": "auto", "last_tick": ["model m (no provider named)"]}
    by_worker = {w["worker"]: w for w in s["workers"]}
    assert by_worker["w1"]["last_delta"]["delta"] == a["id"] and by_worker["w1"]["last_error"] is None
    assert s["last"]["applied"] == 2 and s["last"]["quarantined"] == 1 and s["last"]["held"] == 1
    assert s["totals"]["usage"]["input_tokens"] == 200 and s["totals"]["usage"]["cost_usd"] == 0.5

    out = run(fleet, "status").stdout
    assert "tick 1 " in out and "pending worker branches: 1" in out
    assert f"conflict {c['id']}: posts/ada-1 channel (2 candidates, since tick 1)" in out
    assert "tokens: 200 in, 40 out; cost $0.5000" in out
    assert "last tick: 0 applied, 0 no-op, 2 held (1 conflict(s) opened or joined), 1 quarantined" in out
    assert f"decide: {c['decide']} (or --choose base, or --value JSON)" in out
    assert f"tick 1 deltas/w3/s3/{q['id']}.json: agent 'nobody' is not in state/config.json agents" in out
    assert s["needs_you"][:2] == [
        "1 open conflict(s) to decide (`fleet resolve ID --choose CANDIDATE`, or their pull requests)",
        "1 quarantined delta(s) in the last 9 ticks: read why (`fleet log --delta ID`)"]
    assert "needs you: 1 open conflict(s) to decide" in out


def test_status_with_origin(origin_fleet: tuple[Fleet, Path]) -> None:
    f, bare = origin_fleet
    f.push(f.delta("ada", Op("add", "posts", "ada-1", ("tags",), "o")))
    subprocess.run(["git", "push", "--quiet", "origin", "refs/heads/fleet/*:refs/heads/fleet/*"], cwd=f.path, check=True)
    s = json.loads(run(f, "status", "--json").stdout)
    assert s["remote"] == "origin" and s["pending_branches"] == ["fleet/t1/w1"] and s["tick"] == 0
    run(f, "merge")
    s = json.loads(run(f, "status", "--json").stdout)
    assert s["tick"] == 1 and s["pending_branches"] == []
    assert "remote origin" in run(f, "status").stdout


def test_status_outside_a_fleet(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fleet.main import cli

    plain = tmp_path / "plain"
    plain.mkdir()
    subprocess.run(["git", "init", "-q", str(plain)], check=True)
    r = CliRunner().invoke(cli, ["status", "-C", str(plain), "--json"])
    assert r.exit_code == 1 and "Traceback" not in r.output and "internal error" not in r.output
    assert len(r.stderr.splitlines()) == 1 and "no main branch" in r.stderr


def test_status_with_a_hand_edited_conflict_file(fleet: Fleet) -> None:
    from fleet import canonical

    fleet.push(fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general")),
               fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w2"))
    run(fleet, "merge")
    [c] = json.loads(run(fleet, "status", "--json").stdout)["open_conflicts"]
    rel = f"state/conflicts/{c['id']}.json"
    doc = json.loads(fleet.read(rel))
    del doc["candidates"]
    (fleet.path / rel).write_bytes(canonical.dumps(doc))
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "decide by hand"],
                   cwd=fleet.path, check=True)
    # refused (only the merge engine writes held conflicts): named under "needs you", with the commit to
    # revert, and the conflict shown is the engine's own, from the last tick commit; never a crash
    mine = fleet.main()
    s = json.loads(run(fleet, "status", "--json").stdout)
    assert s["refused"]["commit"] == mine and s["refused"]["path"] == rel
    assert s["needs_you"][0].startswith(f"{rel}: held conflicts are written only by the merge engine")
    assert f"git revert {mine[:12]}" in s["needs_you"][0]
    assert [x["id"] for x in s["open_conflicts"]] == [c["id"]] and s["open_conflicts"][0]["candidates"] == 2


def test_status_with_an_unreachable_origin(fleet: Fleet, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.git"
    subprocess.run(["git", "remote", "add", "origin", str(missing)], cwd=fleet.path, check=True)
    r = run(fleet, "status", code=1)
    assert len(r.stderr.splitlines()) == 1
    assert str(missing) in r.stderr and "does not appear to be a git repository" in r.stderr


def test_status_with_an_empty_origin_says_it_has_no_main(fleet: Fleet, tmp_path: Path) -> None:
    empty = tmp_path / "empty.git"
    subprocess.run(["git", "init", "-q", "--bare", str(empty)], check=True)
    for args in (("status",), ("log",), ("task", "list"), ("msg", "inbox", "ada")):
        r = run(fleet, *args, "--remote", str(empty), code=1)
        assert r.stderr.strip() == (f"fleet: remote {empty} has no main branch: it is empty or holds no fleet "
                                    "(push a fleet's main there first: `git push <remote> main`)"), (args, r.stderr)


def test_dash_c_works_before_the_command_too(fleet: Fleet) -> None:
    from click.testing import CliRunner

    from fleet.main import cli

    for args in (["-C", str(fleet.path), "status", "--json"], ["status", "-C", str(fleet.path), "--json"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["tick"] == 0


def test_a_reader_that_leaves_early_is_no_error(fleet: Fleet) -> None:
    import subprocess
    import sys

    p = subprocess.run(f"{sys.executable} -m fleet -C {fleet.path} validate --json | head -c 1",
                       shell=True, capture_output=True, text=True)
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr


def test_status_names_commits_outside_the_merge_engine(fleet: Fleet) -> None:
    """A person's commit (here a seeded document) is an input, but never a silent
    one: status warns, with the commit, the author and the files, for the last
    limits.window ticks."""
    from fleet import canonical

    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")
    doc = json.loads(fleet.read("state/posts/cleo-1.json"))
    doc.update(id="cleo-77", title="Seeded by hand")
    (fleet.path / "state/posts/cleo-77.json").write_bytes(canonical.dumps(doc))
    subprocess.run(["git", "add", "-A"], cwd=fleet.path, check=True)
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qm", "seed a post"],
                   cwd=fleet.path, check=True)
    mine = fleet.main()
    s = json.loads(run(fleet, "status", "--json").stdout)
    assert [(o["commit"], o["author"], o["refused"]) for o in s["outside"]] == [(mine, "p <p@x>", [])]
    assert s["outside"][0]["changes"] == [{"how": "added", "path": "state/posts/cleo-77.json", "refused": None, "fixed": None}]
    assert (f"warning: commit {mine[:12]} by p <p@x> ('seed a post') changed state outside the merge engine: "
            "added state/posts/cleo-77.json") in run(fleet, "status").stdout
    window = json.loads(fleet.read("state/config.json"))["limits"]["window"]
    for t in range(2, window + 3):  # older than the window: no longer warned about
        fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=t))
        run(fleet, "merge")
    assert json.loads(run(fleet, "status", "--json").stdout)["outside"] == []


def test_commits_before_the_first_tick_are_the_worlds_design_not_outside_changes(fleet: Fleet) -> None:
    """A fleet started in a repository with history (fleet's own clone, a team's
    project): the commits before its first tick made the world it starts from.
    status, log and replay do not list them as changes around the merge engine;
    a document's own log still names them, as made before the first tick. A
    person's commit after the first tick is listed as before."""
    from fleet import canonical

    def commit(name: str, title: str) -> str:
        doc = json.loads(fleet.read("state/posts/cleo-1.json"))
        doc.update(id=name, title=title)
        (fleet.path / f"state/posts/{name}.json").write_bytes(canonical.dumps(doc))
        subprocess.run(["git", "add", "-A"], cwd=fleet.path, check=True)
        subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qm", title],
                       cwd=fleet.path, check=True)
        return fleet.main()

    setup = [commit(f"cleo-{60 + i}", f"design {i}") for i in range(3)]
    assert json.loads(run(fleet, "status", "--json").stdout)["outside"] == []  # not even before a tick
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")
    after = commit("cleo-77", "seed a post")
    s = json.loads(run(fleet, "status", "--json").stdout)
    assert [o["commit"] for o in s["outside"]] == [after]
    listed = [e["commit"] for e in json.loads(run(fleet, "log", "--json").stdout) if e["status"] in ("outside", "setup")]
    assert listed == [after]
    replayed = json.loads(run(fleet, "replay", "--check", "--json").stdout)
    assert [o["commit"] for o in replayed["outside"]] == [after]
    own = json.loads(run(fleet, "log", "posts/cleo-61", "--json").stdout)
    assert [(e["commit"], e["status"]) for e in own] == [(setup[1], "setup")]
    assert "before the first tick ('design 1')" in run(fleet, "log", "posts/cleo-61").stdout


def test_fleet_added_to_a_repository_with_history_replays_and_needs_nothing(tmp_path: Path) -> None:
    """A project of months adopts fleet: its commits before the first tick, and
    the commit that lays down state/fleet.json, are the world's design. replay
    --check passed never again, and status said a change needed the person,
    which nothing they could do would fix."""
    import shutil

    from conftest import fleet_cli

    from fleet.commands.init import init

    proj = tmp_path / "proj"
    proj.mkdir()
    git = ["git", "-c", "user.name=p", "-c", "user.email=p@x"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=proj, check=True)
    for i in range(3):
        (proj / f"notes{i}.md").write_text(f"work {i}\n")
        subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
        subprocess.run([*git, "commit", "-qm", f"my project {i}"], cwd=proj, check=True)
    init(tmp_path / "tpl")
    for part in ("state", "schemas"):
        shutil.copytree(tmp_path / "tpl" / part, proj / part)
    subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-qm", "adopt fleet"], cwd=proj, check=True)
    assert fleet_cli(proj, "run", "--ticks", "1", "--workers", "1").returncode == 0
    replay = fleet_cli(proj, "replay", "--check", "--json")
    assert replay.returncode == 0 and json.loads(replay.stdout)["outside"] == [], replay.stdout + replay.stderr
    s = json.loads(fleet_cli(proj, "status", "--json").stdout)
    assert s["outside"] == [] and s["needs_you"] == []


def test_status_says_why_a_worker_is_dead_and_its_last_error(fleet: Fleet) -> None:
    # each agent from its worker at 2 workers (fleet.plan.assign): ada is w2's, basil w1's
    fleet.push(fleet.delta("ada", Op("incr", "posts", "ada-1", ("score",), 1), worker="w2"),
               fleet.delta("basil", meta={"error": "the model timed out"}, worker="w1"))
    run(fleet, "merge")
    for t in range(2, 6):  # w1 delivers nothing for 4 ticks (watchdog.dead_after_ticks is 3)
        fleet.push(fleet.delta("ada", Op("incr", "posts", "ada-1", ("score",), 1), tick=t, worker="w2"))
        run(fleet, "merge")
    s = json.loads(run(fleet, "status", "--json").stdout)
    w = {x["worker"]: x for x in s["workers"]}
    assert w["w2"]["status"] == "alive" and w["w2"]["why"] is None and w["w2"]["heartbeat"] is None
    assert w["w1"]["status"] == "dead"
    assert w["w1"]["why"] == "delivered nothing in the 4 merged tick(s) since tick 1 (watchdog.dead_after_ticks is 3)"
    assert w["w1"]["last_error"]["error"] == "the model timed out" and w["w1"]["last_error"]["agent"] == "basil"
    out = run(fleet, "status").stdout
    assert "  dead: delivered nothing in the 4 merged tick(s) since tick 1" in out
    assert "  last error (tick 1, basil): the model timed out" in out


def test_status_lists_decisions_and_reverts_waiting_for_the_merge(fleet: Fleet) -> None:
    d = fleet.delta("ada", Op("incr", "posts", "ada-1", ("score",), 1))
    fleet.push(d)
    run(fleet, "merge")
    run(fleet, "revert", d["id"])
    s = json.loads(run(fleet, "status", "--json").stdout)
    assert [(p["kind"], p["what"]) for p in s["pending_decisions"]] == [("revert", f"revert of {d['id']}")]
    assert f"waiting for the next merge: revert of {d['id']}" in run(fleet, "status").stdout


def test_the_last_ticks_counts_include_its_late_deltas(fleet: Fleet) -> None:
    fleet.push(fleet.delta("ada", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=2),
               fleet.delta("eli", Op("incr", "posts", "ada-1", ("score",), 1), tick=1, worker="slow"),
               fleet.delta("dara", meta={"noop": "quiet"}, tick=2, worker="w2"))
    run(fleet, "merge")
    s = json.loads(run(fleet, "status", "--json").stdout)
    assert s["deltas"] == {"applied": 2, "noop": 1, "failed": 0, "held": 0, "quarantined": 0, "conflicts": 0, "resolved": 0}
