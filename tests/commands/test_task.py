"""`fleet task ...`: the queue's life cycle, fencing tokens and bad input, on real git."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet.git import Git
from fleet.tasks import BRANCH, task_path
from tests.conftest import Fleet, run


def tasks(f: Fleet, *args: str) -> dict:
    return json.loads(run(f, "task", "list", "--json", *args).output)


def add(f: Fleet, title: str, *args: str) -> str:
    out = json.loads(run(f, "task", "add", title, "--json", *args).output)
    assert len(out["added"]) == 1
    return out["added"][0]


def claim(f: Fleet, agent: str, *args: str, code: int = 0) -> dict:
    r = run(f, "task", "claim", "--as", agent, "--json", *args, code=code)
    return json.loads(r.output.strip().splitlines()[-1] if code else r.stdout)


def commits(f: Fleet, ref: str | None = None) -> list[str]:
    """The queue's history, newest first: the branch and the claims on claim refs that it has
    not merged yet (``ref``: only that)."""
    where = [ref] if ref else [f"refs/heads/{BRANCH}", f"--glob=refs/heads/{BRANCH}-claims/*"]
    return f.git.text("log", "--date-order", "--format=%s", *where).splitlines()


def test_life_cycle_add_claim_renew_complete(fleet: Fleet) -> None:
    a = add(fleet, "write the docs", "--priority", "1", "--body", "All of them.")
    b = add(fleet, "review the docs", "--dep", a)
    ready = json.loads(run(fleet, "task", "ready", "--json").output)["tasks"]
    assert [t["id"] for t in ready] == [a]  # b waits for a
    t = claim(fleet, "ada")
    assert (t["id"], t["fence"], t["status"], t["claimed_by"], t["body"]) == (a, 1, "in-progress", "ada", "All of them.")
    assert claim(fleet, "basil", code=3)["exit"] == 3  # b is blocked, a is taken
    renewed = json.loads(run(fleet, "task", "renew", a, "--fence", "1", "--json", "--lease", "3600").output)
    assert renewed["lease_until"] > t["lease_until"]
    run(fleet, "task", "complete", a, "--fence", "1", "--result", '{"pages": 3}')
    done = json.loads(run(fleet, "task", "show", a, "--json").output)
    assert (done["status"], done["result"], done["lease_until"]) == ("done", {"pages": 3}, None)
    assert [h["what"].split(" ")[1] for h in done["history"]] == ["add", "claim", "renew", "complete"]
    t2 = claim(fleet, "basil")  # b is ready now that a is done
    assert t2["id"] == b
    # the audit trail: one commit per change, saying who did what
    log = commits(fleet)
    assert log[0] == f"task claim {b} by basil (fence 1)"
    assert f"task complete {a} by ada (fence 1)" in log
    assert main_untouched(fleet)


def main_untouched(f: Fleet) -> bool:
    """The queue never writes main: main is still the genesis commit."""
    return f.git.text("rev-list", "--count", "refs/heads/main") == "1"


def test_claim_order_slung_first_then_priority_then_age(fleet: Fleet) -> None:
    low = add(fleet, "low", "--priority", "4")
    high = add(fleet, "high", "--priority", "0")
    mid = add(fleet, "mid")
    mine = add(fleet, "for cleo", "--priority", "4", "--for", "cleo")
    assert [t["id"] for t in tasks(fleet)["tasks"]][:1] == [high]
    ada = json.loads(run(fleet, "task", "ready", "--as", "ada", "--json").output)["tasks"]
    assert [t["id"] for t in ada] == [high, mid, low]  # cleo's task is not ada's
    cleo = json.loads(run(fleet, "task", "ready", "--as", "cleo", "--json").output)["tasks"]
    assert [t["id"] for t in cleo] == [mine, high, mid, low]
    assert claim(fleet, "cleo")["id"] == mine
    assert claim(fleet, "ada")["id"] == high


def test_sling_puts_a_task_on_one_hook(fleet: Fleet) -> None:
    t = add(fleet, "only for dara")
    run(fleet, "task", "sling", t, "dara")
    assert claim(fleet, "ada", code=3)["exit"] == 3
    assert claim(fleet, "ada", "--task", t, code=3)["exit"] == 3
    run(fleet, "task", "sling", t)  # anyone again
    assert claim(fleet, "ada")["id"] == t
    r = run(fleet, "task", "sling", t, "dara", code=1)
    assert "only a pending task can be slung" in r.output


@pytest.mark.parametrize("how", ["agent removed", "agents_claim off", "claimer pattern dropped"])
def test_a_task_slung_to_one_who_may_no_longer_claim_is_named_not_left_ready(fleet: Fleet, how: str) -> None:
    """Slung to dara, then the config changes so that dara may not claim: the task was
    listed as ready, counted ready by status, and no claim ever took it. It is marked,
    left out of ready, and status names it and how to sling it again."""
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    target = "ci-bot-7" if how == "claimer pattern dropped" else "dara"
    if how == "claimer pattern dropped":
        cfg["tasks"] = {"claimers": ["ci-bot-*"]}
        commit_config(fleet, cfg)
    t = add(fleet, "only for one")
    run(fleet, "task", "sling", t, target)
    if how == "agent removed":
        del cfg["agents"]["dara"]
    elif how == "agents_claim off":
        cfg["tasks"] = {"agents_claim": False, "claimers": ["ci-*"]}
    else:
        cfg["tasks"] = {"claimers": []}
    commit_config(fleet, cfg)
    assert tasks(fleet, "--status", "pending")["tasks"][0]["stranded"].startswith(f"slung to {target}, but ")
    ready = json.loads(run(fleet, "task", "ready", "--json").stdout)
    assert ready["tasks"] == [] and [s["id"] for s in ready["stranded"]] == [t]
    status = json.loads(run(fleet, "status", "--json").stdout)
    assert status["tasks"]["ready"] == 0 and status["tasks"]["stranded"] == 1
    [line] = [n for n in status["needs_you"] if t in n]
    assert f"fleet task sling {t} AGENT" in line and target in line
    other = "ci-bot-1" if how == "agents_claim off" else "ada"
    run(fleet, "task", "sling", t, other)
    assert claim(fleet, other)["id"] == t
    assert json.loads(run(fleet, "status", "--json").stdout)["tasks"]["stranded"] == 0


def test_fencing_token_refuses_a_stale_holder(fleet: Fleet) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["tasks"] = {"retry_delay_seconds": 0, "grace_seconds": 0}
    commit_config(fleet, cfg)
    t = add(fleet, "contested")
    first = claim(fleet, "ada", "--lease", "1")
    time.sleep(1.1)
    run(fleet, "watchdog")
    second = claim(fleet, "basil")
    assert (second["id"], second["fence"]) == (t, first["fence"] + 1)
    # ada comes back with her old token: refused, whatever she tries, and nothing is written
    before = fleet.git.rev_parse(f"refs/heads/{BRANCH}")
    for verb, extra in (("complete", ["--result", "1"]), ("renew", []), ("release", []),
                        ("fail", ["--reason", "x"])):
        r = run(fleet, "task", verb, t, "--fence", str(first["fence"]), *extra, code=1)
        assert "fence 1 is stale" in r.output and "claimed again (fence 2, by basil)" in r.output
    assert fleet.git.rev_parse(f"refs/heads/{BRANCH}") == before
    r = run(fleet, "task", "complete", t, "--fence", "2", "--as", "ada", code=1)
    assert "held by basil, not ada" in r.output
    r = run(fleet, "task", "complete", t, "--fence", "7", code=1)
    assert "no claim was given fence 7" in r.output
    run(fleet, "task", "complete", t, "--fence", "2", "--as", "basil")
    # the same complete again is a retry whose first attempt landed: no error, no commit
    run(fleet, "task", "complete", t, "--fence", "2", "--as", "basil")
    assert commits(fleet)[0] == f"task complete {t} by basil (fence 2)"
    assert commits(fleet)[1].startswith(f"task claim {t} by basil")


def commit_config(f: Fleet, cfg: dict) -> None:
    (f.path / "state/config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    g = ["git", "-c", "user.name=t", "-c", "user.email=t@x", "-c", "commit.gpgsign=false"]
    import subprocess

    subprocess.run([*g, "commit", "-qam", "config"], cwd=f.path, check=True)


def test_fail_retries_after_a_delay_then_gives_up(fleet: Fleet) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["tasks"] = {"retry_delay_seconds": 0, "max_failures": 2}
    commit_config(fleet, cfg)
    t = add(fleet, "flaky")
    c = claim(fleet, "ada")
    r = json.loads(run(fleet, "task", "fail", t, "--fence", str(c["fence"]), "--reason", "tests red", "--json").output)
    assert (r["status"], r["failures"], r["error"], r["claimed_by"]) == ("pending", 1, "tests red", None)
    c = claim(fleet, "basil")
    assert c["fence"] == 2
    r = json.loads(run(fleet, "task", "fail", t, "--fence", "2", "--reason", "still red", "--json").output)
    assert (r["status"], r["failures"]) == ("failed", 2)
    assert claim(fleet, "ada", code=3)["exit"] == 3
    assert tasks(fleet, "--status", "failed")["tasks"][0]["id"] == t


def test_release_gives_back_without_a_failure_after_the_cooldown(fleet: Fleet) -> None:
    """A released task is not handed out again at once (its holder would claim it
    straight back), but no failure is counted; a person's sling ends the cooldown."""
    t = add(fleet, "later")
    c = claim(fleet, "ada")
    r = json.loads(run(fleet, "task", "release", t, "--fence", str(c["fence"]), "--json").output)
    assert (r["status"], r["failures"], r["claimed_by"]) == ("pending", 0, None)
    assert r["not_before"] > r["updated_at"]  # tasks.retry_delay_seconds, 5 minutes by default
    assert "(tasks.retry_delay_seconds)" in fleet.git.text("log", "-1", "--format=%B", f"refs/heads/{BRANCH}")
    r = run(fleet, "task", "claim", "--as", "ada", code=3)
    assert f"the next is ready at {json.loads(run(fleet, 'task', 'show', t, '--json').output)['not_before']}" in r.output
    s = json.loads(run(fleet, "status", "--json").output)
    assert s["tasks"]["cooling"] == 1 and "1 cooling down" in run(fleet, "status").output
    run(fleet, "task", "sling", t, "basil")
    assert "cooldown (until" in fleet.git.text("log", "-1", "--format=%B", f"refs/heads/{BRANCH}")
    assert claim(fleet, "basil")["fence"] == 2


def test_add_file_is_one_push_and_reruns_are_idempotent(fleet: Fleet, tmp_path: Path) -> None:
    f = tmp_path / "tasks.jsonl"
    lines = [{"id": f"job-{i}", "title": f"job {i}", "priority": i % 5} for i in range(300)]
    lines.append({"id": "after", "title": "after all", "deps": ["job-0", "job-299"]})
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = json.loads(run(fleet, "task", "add", "--file", str(f), "--json").output)
    assert len(out["added"]) == 301 and out["pushed"]
    assert len(commits(fleet)) == 1
    again = json.loads(run(fleet, "task", "add", "--file", str(f), "--json").output)
    assert (again["added"], len(again["existing"]), again["pushed"]) == ([], 301, False)
    assert len(commits(fleet)) == 1
    # 256 folders at most, so no folder nears GitHub's 3,000 entries
    tree = Git(fleet.path).ls_tree(f"refs/heads/{BRANCH}", "tasks/")
    assert len({p.split("/")[1] for p in tree}) <= 256 and task_path("after") in tree


def test_generated_ids_are_short_and_distinct(fleet: Fleet, tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps({"title": "same title"}) + "\n" for _ in range(200)))
    out = json.loads(run(fleet, "task", "add", "--file", str(f), "--json").output)
    assert len(set(out["added"])) == 200
    assert all(len(i) == len("tk-") + 4 for i in out["added"])


@pytest.mark.parametrize(
    "content, rule",
    [
        ('{"title": "ok"}\n{"title": ""}\n', "tasks.jsonl:2: at /title"),
        ('{"title": "ok"}\nnot json\n', "tasks.jsonl:2"),
        ('{"title": "x", "owner": "me"}\n', "tasks.jsonl:1: unknown field 'owner'"),
        ('{"title": "x", "id": "../etc"}\n', "tasks.jsonl:1: id '../etc' is not a name"),
        ('{"title": "x", "priority": 9}\n', "tasks.jsonl:1: at /priority"),
        ('{"title": "x", "for": "zed"}\n', "tasks.jsonl:1: for: zed may not claim tasks: it is no tick agent and "
                                          "matches nothing in tasks.claimers"),
        ('{"title": "x", "for": "a/../b"}\n', "tasks.jsonl:1: for: 'a/../b' is no claimer's name"),
        ('{"title": "x", "deps": ["nope"]}\n', "tasks.jsonl:1: deps: no task 'nope'"),
        ('{"id": "a", "title": "a", "deps": ["b"]}\n{"id": "b", "title": "b", "deps": ["a"]}\n',
         "deps: a cycle would never be ready: a -> b -> a"),
        ('{"id": "a", "title": "a"}\n{"id": "a", "title": "other"}\n', "tasks.jsonl:2: task id 'a' appears twice"),
        ('["a list"]\n', "tasks.jsonl:1: a task must be a JSON object"),
        ("\n\n", "tasks.jsonl: no tasks in the file"),
        ('{"title": "line\\nbreak"}\n', "tasks.jsonl:1: at /title"),
        ('{"title": "esc \\u001b[31mred"}\n', "tasks.jsonl:1: at /title"),
        ('{"title": "x", "for": ["ada"]}\n', "tasks.jsonl:1: at /for: must be an agent's name or null"),
        ('{"title": "x", "priority": 1.0}\n', "tasks.jsonl:1: at /priority: 1.0 is not a whole number"),
        ('{"title": "x", "body": "%s"}\n' % ("b" * 70000), "tasks.jsonl:1: at /body"),
        ('{"id": "a", "title": "a"}\n{"id": "a", "title": "a"}\n', "tasks.jsonl:2: task id 'a' appears twice in this batch"),
        ('{"title": "x", "paths": ["src/../../etc"]}\n', "tasks.jsonl:1: at /paths/0: 'src/../../etc': no empty, '.' or '..'"),
        ('{"title": "x", "paths": ["/etc/passwd"]}\n', "tasks.jsonl:1: at /paths/0: '/etc/passwd': a path is relative"),
        ('{"title": "x", "paths": ["src/[a-"]}\n', "tasks.jsonl:1: at /paths/0: 'src/[a-': a '[' without its ']'"),
        ('{"title": "x", "paths": ["a**b"]}\n', "tasks.jsonl:1: at /paths/0: 'a**b': '**' stands alone"),
        ('{"title": "x", "paths": "src"}\n', "tasks.jsonl:1: at /paths: a list of paths"),
        (json.dumps({"title": "x", "paths": [f"p{i}" for i in range(65)]}) + "\n", "tasks.jsonl:1: at /paths: 65 paths"),
        ('{"title": "x", "paths": ["%s"]}\n' % ("a/" * 200), "tasks.jsonl:1: at /paths/0:"),
    ],
)
def test_bad_task_files_name_the_line_and_the_rule_and_add_nothing(fleet: Fleet, tmp_path: Path, content: str,
                                                                   rule: str) -> None:
    f = tmp_path / "tasks.jsonl"
    f.write_text(content)
    r = run(fleet, "task", "add", "--file", str(f), code=1)
    assert rule in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and len(r.output) < 600  # one line, a bad value cut short
    assert fleet.git.rev_parse(f"refs/heads/{BRANCH}") is None  # all or nothing


def test_bad_commands_are_usage_errors(fleet: Fleet, tmp_path: Path) -> None:
    t = add(fleet, "one")
    assert "zed may not claim tasks" in run(fleet, "task", "claim", "--as", "zed", code=2).output
    assert "give a TITLE or --file" in run(fleet, "task", "add", code=2).output
    assert "--file takes its fields" in run(fleet, "task", "add", "--file", str(tmp_path / "x.jsonl"),
                                            "--priority", "1", code=2).output
    assert "cannot read" in run(fleet, "task", "add", "--file", str(tmp_path / "missing.jsonl"), code=1).output
    assert "no task 'nope'" in run(fleet, "task", "show", "nope", code=1).output
    assert "it was never claimed" in run(fleet, "task", "complete", t, "--fence", "1", code=1).output
    assert "--fence" in run(fleet, "task", "complete", t, "--fence", "0", code=2).output
    r = run(fleet, "task", "complete", t, "--fence", "1", "--result", "not json", code=2)
    assert r.output.startswith("fleet: --result") or "--result" in r.output
    r = run(fleet, "task", "claim", "--as", "ada", "--lease", "0", code=2)
    assert "--lease" in r.output
    assert "already exists with other content" in run(fleet, "task", "add", "other", "--id", t, code=1).output


def test_a_corrupt_task_file_is_named(fleet: Fleet) -> None:
    add(fleet, "fine")
    git = fleet.git
    tip = git.rev_parse(f"refs/heads/{BRANCH}")
    bad = git.write_commit(tip, "hand edit\n", {task_path("zz"): b'{"id": "zz", "title": "x"}\n'}, [])
    git.update_ref(f"refs/heads/{BRANCH}", bad, tip)
    # quarantined: named with the rule, left in place, and the rest of the queue goes on
    r = run(fleet, "task", "list")
    assert f"warning: {BRANCH}:{task_path('zz')}: at /: " in r.output and "schemas/task.schema.json" in r.output
    assert "fine" in r.output
    r = run(fleet, "task", "add", "again", "--id", "zz", code=1)  # its place is taken by the bad file: not overwritten
    assert f"{BRANCH}:{task_path('zz')} is quarantined" in r.output


def test_the_queue_lives_on_the_remote(origin_fleet: tuple[Fleet, Path]) -> None:
    f, bare = origin_fleet
    t = add(f, "remote work")
    assert Git(bare).rev_parse(f"refs/heads/{BRANCH}") is not None
    assert f.git.rev_parse(f"refs/heads/{BRANCH}") is None  # nothing local but the tracking ref
    c = claim(f, "ada")
    assert c["id"] == t
    # the claim is on the remote, on the task's claim ref (the branch merges it at the task's next change)
    remote_doc = json.loads(Git(bare).show(f"refs/heads/{BRANCH}-claims/{t}", task_path(t)))
    assert remote_doc["claimed_by"] == "ada" and remote_doc["fence"] == 1
    s = json.loads(run(f, "status", "--json").output)
    assert s["tasks"]["in-progress"] == 1 and s["tasks"]["pending"] == 0


def test_a_key_in_a_task_or_result_never_reaches_the_branch(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "sk-ant-canary-0123456789abcdef"
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    run(fleet, "task", "add", f"rotate {canary}", "--body", f"the key is {canary}", code=1)  # refused, not masked
    t = add(fleet, "rotate the key")
    c = claim(fleet, "ada")
    run(fleet, "task", "complete", t, "--fence", str(c["fence"]), "--result", json.dumps({"leaked": canary}), code=1)
    run(fleet, "task", "complete", t, "--fence", str(c["fence"]), "--result", json.dumps({"rotated": True}))
    # every commit of the queue, merges shown against their first parent (the branch before them)
    everything = fleet.git.run("log", "-p", "--diff-merges=first-parent", "--format=%B", f"refs/heads/{BRANCH}",
                               f"--glob=refs/heads/{BRANCH}-claims/*")
    assert canary.encode() not in everything and b"rotated" in everything


def test_a_task_waiting_on_a_failed_one_says_so_and_reopen_gives_another_go(fleet: Fleet) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["tasks"] = {"retry_delay_seconds": 0, "max_failures": 1}
    commit_config(fleet, cfg)
    add(fleet, "parent", "--id", "p1")
    add(fleet, "child", "--id", "c1", "--dep", "p1")
    c = claim(fleet, "ada")
    run(fleet, "task", "fail", "p1", "--fence", str(c["fence"]), "--reason", "boom")
    # waiting cannot help: an error (exit 1), not "nothing to do" (exit 3), so a polling loop stops
    r = run(fleet, "task", "claim", "--as", "ada", "--task", "c1", code=1)
    assert "task c1 is never ready: p1 failed; `fleet task reopen p1` gives it another go" in r.output
    r = run(fleet, "task", "claim", "--as", "ada", "--task", "p1", code=1)
    assert "p1 is failed after 1 failures" in r.output
    assert "[never ready: p1 failed]" in run(fleet, "task", "list").output
    r = run(fleet, "task", "add", "another", "--dep", "p1", code=1)
    assert "task 'p1' has failed, so this one could never be ready" in r.output
    r = run(fleet, "task", "complete", "p1", "--fence", "1", code=1)
    assert "failed for good after 1 failures" in r.output
    assert "only a failed task is reopened" in run(fleet, "task", "reopen", "c1", code=1).output
    reopened = json.loads(run(fleet, "task", "reopen", "p1", "--json").output)
    assert (reopened["status"], reopened["failures"], reopened["fence"]) == ("pending", 0, 1)
    assert claim(fleet, "basil")["fence"] == 2  # the fence still only goes up
    assert commits(fleet)[1] == "task reopen p1 after 1 failures"


def test_done_is_done(fleet: Fleet) -> None:
    t = add(fleet, "once")
    c = claim(fleet, "ada")
    run(fleet, "task", "complete", t, "--fence", str(c["fence"]))
    for verb in ("renew", "release"):
        r = run(fleet, "task", verb, t, "--fence", "1", code=1)
        assert "it is already done (by ada, fence 1)" in r.output
    r = run(fleet, "task", "complete", t, "--fence", "1", "--result", '"other"', code=1)
    assert "already done" in r.output
    assert "--fence" in run(fleet, "task", "renew", t, "--fence", "0", code=2).output


def test_a_result_has_a_size_limit(fleet: Fleet, tmp_path: Path) -> None:
    t = add(fleet, "big")
    c = claim(fleet, "ada")
    big = tmp_path / "r.json"
    big.write_text(json.dumps({"blob": "x" * 70000}))
    r = run(fleet, "task", "complete", t, "--fence", str(c["fence"]), "--result-file", str(big), code=1)
    assert "a task's result is at most 65,536" in r.output
    assert json.loads(run(fleet, "task", "show", t, "--json").output)["status"] == "in-progress"


def test_adding_again_after_a_sling_is_still_a_no_op(fleet: Fleet, tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"id": "s", "title": "s", "for": "ada"}) + "\n")
    run(fleet, "task", "add", "--file", str(f))
    run(fleet, "task", "sling", "s", "basil")
    out = json.loads(run(fleet, "task", "add", "--file", str(f), "--json").output)
    assert (out["added"], out["existing"]) == ([], ["s"])


def test_with_dash_c_a_relative_file_is_in_that_folder(fleet: Fleet, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    (fleet.path / "mine.jsonl").write_text('{"id": "rel", "title": "relative"}\n')
    monkeypatch.chdir(tmp_path)
    from click.testing import CliRunner

    from fleet.main import cli

    r = CliRunner().invoke(cli, ["-C", str(fleet.path), "task", "add", "--file", "mine.jsonl"])
    assert r.exit_code == 0, r.output
    assert "added rel" in r.output


def test_an_id_that_carries_a_secret_is_refused(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_secretvalue123")
    r = run(fleet, "task", "add", "x", "--id", "ghs_secretvalue123", code=1)
    assert "id contains a secret" in r.output and "ghs_secretvalue123" not in r.output


def test_a_malformed_time_on_the_branch_is_named_not_a_crash(fleet: Fleet) -> None:
    t = add(fleet, "fine")
    tip = fleet.git.rev_parse(f"refs/heads/{BRANCH}")
    doc = json.loads(fleet.git.show(tip, task_path(t)))
    doc["not_before"] = "soon"
    bad = fleet.git.write_commit(tip, "hand edit\n", {task_path(t): json.dumps(doc).encode()}, [])
    fleet.git.update_ref(f"refs/heads/{BRANCH}", bad, tip)
    # quarantined, named by every reader; the task is not handed out (nothing is ready: exit 3)
    for args, code in ((["task", "list"], 0), (["task", "claim", "--as", "ada"], 3), (["status"], 0)):
        r = run(fleet, *args, code=code)
        assert f"{BRANCH}:{task_path(t)}: at /not_before: 'soon' is not a UTC time" in r.output


def test_a_task_in_the_old_spelling_is_claimed_completed_and_rewritten_in_the_new(fleet: Fleet) -> None:
    """A queue written by an earlier fleet says claimedBy, leaseUntil, ...: it keeps working, and
    the first change writes the task back with snake_case keys."""
    add(fleet, "placeholder")  # the branch exists
    old = {"id": "tk-old1", "title": "from an earlier fleet", "status": "pending", "priority": 1, "deps": [],
           "for": None, "token": 2, "attempts": 2, "failures": 1, "claimedBy": None, "claimedAt": None,
           "leaseUntil": None, "notBefore": "2020-01-01T00:00:00.000Z", "createdAt": "2020-01-01T00:00:00.000Z",
           "updatedAt": "2020-01-01T00:00:00.000Z", "error": "tests red"}
    tip = fleet.git.rev_parse(f"refs/heads/{BRANCH}")
    hand = fleet.git.write_commit(tip, "by hand, in the old spelling\n",
                                  {task_path("tk-old1"): json.dumps(old, indent=2, sort_keys=True).encode() + b"\n"}, [])
    fleet.git.update_ref(f"refs/heads/{BRANCH}", hand, tip)
    listed = {t["id"]: t for t in tasks(fleet)["tasks"]}
    assert (listed["tk-old1"]["not_before"], listed["tk-old1"]["ready"]) == ("2020-01-01T00:00:00.000Z", True)
    t = claim(fleet, "ada")  # priority 1 before the placeholder's 2
    assert (t["id"], t["fence"], t["token"], t["claimed_by"], t["attempts"]) == ("tk-old1", 3, 3, "ada", 3)
    run(fleet, "task", "complete", "tk-old1", "--fence", "3", "--result", '"ok"')
    doc = json.loads(fleet.git.show(f"refs/heads/{BRANCH}", task_path("tk-old1")))
    assert (doc["status"], doc["claimed_by"], doc["result"], doc["created_at"]) == (
        "done", "ada", "ok", "2020-01-01T00:00:00.000Z")
    assert not [k for k in doc if any(c.isupper() for c in k)], doc
    assert doc["fence"] == 3 and "token" not in doc  # the record, too, calls it a fence now


def git_trace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Have every git process log its events (trace2) to a file: how many pushes
    a command made is counted there, not guessed from how long it took."""
    trace = tmp_path / "trace2.jsonl"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    return trace


def pushes(trace: Path) -> int:
    """How many `git push` commands ran, from git's own trace2 event log."""
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    return sum(1 for e in events if e.get("event") == "cmd_name" and e.get("name") == "push")


def test_a_push_refused_for_good_fails_at_once_with_gits_reason(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    f, bare = origin_fleet
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'fleet/tasks is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    trace = git_trace(monkeypatch, tmp_path)
    r = run(f, "task", "add", "blocked", code=1)
    assert pushes(trace) == 1  # refused once, not retried as if it were a race
    assert "refused: refs/heads/fleet/tasks [remote rejected] (pre-receive hook declined)" in r.output


def test_checked_task_files_are_not_read_again_and_a_bad_cache_is_ignored(fleet: Fleet, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.commands import task as task_cmd
    from fleet.git import Git as GitClass

    def claim_fn(path: Path, agent: str) -> dict:
        task_cmd._queues.clear()  # each claim as a new process makes it: no queue read before in memory
        return task_cmd.claim(path, agent)

    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps({"id": f"c{i}", "title": f"c{i}"}) + "\n" for i in range(50)))
    run(fleet, "task", "add", "--file", str(f))
    run(fleet, "task", "list")  # a first reader checks every file and caches them
    asked: list[int] = []
    real = GitClass.cat_maybe

    def counting(self: GitClass, names: list[str]) -> dict[str, bytes | None]:
        asked.append(len(names))
        return real(self, names)

    monkeypatch.setattr(GitClass, "cat_maybe", counting)
    claim_fn(fleet.path, "ada")
    assert asked == [1]  # main's config only: the 50 task files came from the cache
    cache = fleet.path / ".git" / "fleet" / "cache" / "queue.json"
    assert cache.is_file()
    cache.write_bytes(b"{not json")
    asked.clear()
    t = claim_fn(fleet.path, "basil")
    # a broken cache costs a full read, nothing else: 50 files, ada's claim (on its claim ref) and the config
    assert t["fence"] == 1 and asked == [52]
    # a cached file is trusted only under the rules that checked it
    data = json.loads(cache.read_bytes())
    cache.write_text(json.dumps(dict(data, version="another")))
    asked.clear()
    claim_fn(fleet.path, "cleo")
    assert asked == [53]  # and basil's claim
    # a cache whose entries are not documents is no cache
    data = json.loads(cache.read_bytes())
    cache.write_text(json.dumps(dict(data, docs={k: ["x"] for k in data["docs"]})))
    asked.clear()
    assert claim_fn(fleet.path, "dara")["claimed_by"] == "dara"
    assert asked == [54]
    assert [p.name for p in cache.parent.iterdir()] == ["queue.json"]  # no temp files left


def test_a_ref_the_remote_cannot_create_is_a_refusal_not_a_race(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """git says "failed to update ref" for a lost race and for a name clash
    alike; fleet asks the remote whether the branch moved before retrying."""
    f, bare = origin_fleet
    Git(bare).run("branch", "fleet", "main")  # refs/heads/fleet blocks refs/heads/fleet/tasks
    trace = git_trace(monkeypatch, tmp_path)
    r = run(f, "task", "add", "clash", code=1)
    assert pushes(trace) == 1  # the remote said the branch did not move: no retry
    assert "'refs/heads/fleet' exists; cannot create 'refs/heads/fleet/tasks'" in r.output


def test_fence_is_the_option_and_token_still_works_with_a_note(fleet: Fleet) -> None:
    """`--fence N` as the brief names it, in flags, JSON and text; `--token N`, the
    earlier name, still works for one release and says so on stderr."""
    from click.testing import CliRunner

    from fleet.main import cli

    t = add(fleet, "named")
    c = claim(fleet, "ada")
    assert (c["fence"], c["token"]) == (1, 1)  # "token" in JSON is kept for one release too
    r = run(fleet, "task", "renew", t, "--fence", "1")
    assert r.output.startswith(f"renewed {t}: fence 1, lease until")
    r = CliRunner().invoke(cli, ["task", "renew", "-C", str(fleet.path), t, "--token", "1", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["fence"] == 1
    assert "--token is deprecated" in r.stderr and "use --fence" in r.stderr
    r = run(fleet, "task", "renew", t, "--fence", "1", "--token", "2", code=2)
    assert "--fence 1 and --token 2 disagree" in r.output
    r = run(fleet, "task", "renew", t, code=2)
    assert "missing option --fence N" in r.output
    r = run(fleet, "task", "renew", t, "--fence", str(2**80), code=2)
    assert "--fence" in r.output and "Traceback" not in r.output
    assert "--token" not in run(fleet, "task", "renew", "--help").output  # hidden: new scripts learn --fence
    text = run(fleet, "task", "show", t).output
    assert "fence 1" in text and "token" not in text
    assert commits(fleet)[0] == f"task renew {t} by ada (fence 1)"


def test_claimers_are_configured_apart_from_tick_agents(fleet: Fleet) -> None:
    """tasks.claimers (names or globs) may claim without taking turns in ticks; the
    tick agents may too unless tasks.agents_claim is false; anyone else is a usage
    error that names the config key."""
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["tasks"] = {"claimers": ["laptop-*", "ci-?", "reviewer"]}
    commit_config(fleet, cfg)
    for i in range(4):
        add(fleet, f"job {i}")
    assert claim(fleet, "laptop-3")["claimed_by"] == "laptop-3"
    assert claim(fleet, "ci-7")["claimed_by"] == "ci-7"
    assert claim(fleet, "ada")["claimed_by"] == "ada"  # a tick agent still may
    r = run(fleet, "task", "claim", "--as", "bob", code=2)
    assert r.output.strip().count("\n") == 0 and "tasks.claimers" in r.output and "laptop-*" in r.output
    assert "ci-12" not in json.dumps(tasks(fleet))
    run(fleet, "task", "claim", "--as", "ci-12", code=2)  # ? is one character
    r = run(fleet, "task", "claim", "--as", "laptop-../x", code=2)
    assert "is no claimer's name (letters, digits" in r.output
    # a claimer takes no turns in ticks: the plan knows only the tick agents
    plan = json.loads(run(fleet, "plan", "--json").output)
    assert "laptop-3" not in json.dumps(plan) and "ada" in json.dumps(plan)
    # slinging to a claimer, and its holder commands, work as for an agent
    t = add(fleet, "for the reviewer", "--for", "reviewer")
    assert claim(fleet, "reviewer")["id"] == t
    run(fleet, "task", "complete", t, "--fence", "1", "--as", "reviewer")
    # the author takes the tick agents' right away
    cfg["tasks"]["agents_claim"] = False
    commit_config(fleet, cfg)
    r = run(fleet, "task", "claim", "--as", "basil", code=2)
    assert "basil is a tick agent and tasks.agents_claim is false" in r.output
    assert "tasks.agents_claim" in run(fleet, "task", "ready", "--as", "basil", code=2).output
    assert claim(fleet, "laptop-9")["claimed_by"] == "laptop-9"


@pytest.mark.parametrize("claimers", [["a" * 65], ["bad/slash"], [7], ["x"] * 2, "laptop-*"])
def test_bad_claimers_in_config_name_the_file_and_the_rule(fleet: Fleet, claimers: object) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["tasks"] = {"claimers": claimers}
    commit_config(fleet, cfg)
    r = run(fleet, "task", "claim", "--as", "ada", code=1)
    assert "state/config.json: at /tasks/claimers" in r.output and "schemas/config.schema.json" in r.output


def test_list_and_ready_show_waves_and_filter_by_one(fleet: Fleet) -> None:
    """A task's wave is its dependency depth: W0 has no deps, W1 waits for W0 only, ..."""
    a = add(fleet, "types", "--id", "types")
    b = add(fleet, "module b", "--dep", a)
    c = add(fleet, "module c", "--dep", a)
    d = add(fleet, "integration", "--dep", b, "--dep", c)
    lone = add(fleet, "docs")
    waves = {t["id"]: t["wave"] for t in tasks(fleet)["tasks"]}
    assert waves == {a: 0, b: 1, c: 1, d: 2, lone: 0}
    assert sorted(t["id"] for t in tasks(fleet, "--wave", "1")["tasks"]) == sorted([b, c])
    text = run(fleet, "task", "list", "--wave", "2").output
    assert [line.split()[:3] for line in text.splitlines() if line.startswith("tk-")] == [[d, "P2", "W2"]]
    ready = json.loads(run(fleet, "task", "ready", "--wave", "0", "--json").output)["tasks"]
    assert sorted(t["id"] for t in ready) == sorted([a, lone])
    assert json.loads(run(fleet, "task", "ready", "--wave", "1", "--json").output)["tasks"] == []  # b and c wait
    assert run(fleet, "task", "ready", "--wave", "1").stdout == "no task is ready\n"
    r = run(fleet, "task", "list", "--wave", str(10**30), code=2)
    assert "--wave" in r.output and "Traceback" not in r.output
    run(fleet, "task", "list", "--wave", "-1", code=2)


def test_tasks_that_share_paths_are_never_in_flight_at_once(fleet: Fleet) -> None:
    """Seed 003: shared files are found before work starts. add warns, claim and
    ready hold a task back while one in flight shares its paths, and say which."""
    app = add(fleet, "refactor the app", "--id", "app", "--path", "src/app.py", "--path", "docs/")
    r = run(fleet, "task", "add", "touch all of src", "--id", "src", "--path", "src", "--json")
    out = json.loads(r.stdout)
    assert out["added"] == ["src"] and out["overlaps"] == [
        {"task": "src", "with": app, "status": "pending", "mine": "src", "theirs": "src/app.py", "covers": "src/app.py"}]
    r = run(fleet, "task", "add", "web tests", "--id", "web", "--path", "tests/web/*.py")
    assert "warning" not in r.output  # nothing shared: no warning
    r = run(fleet, "task", "add", "after the app", "--id", "later", "--path", "src/*.py", "--dep", app)
    assert r.stderr.strip() == ("warning: later shares paths with src (pending): 'src/*.py' and 'src' both cover "
                                "src/x.py; they will not be in progress at once")  # not with app: deps order them
    assert claim(fleet, "ada", "--task", "src")["id"] == "src"
    # ready skips app (src holds its paths), and says so
    r = json.loads(run(fleet, "task", "ready", "--json").output)
    assert [t["id"] for t in r["tasks"]] == ["web"]
    assert [(h["id"], h["held_by"], h["holder"], h["covers"]) for h in r["held_back"]] == [
        ("app", "src", "ada", "src/app.py")]
    r = run(fleet, "task", "ready")
    assert "held back: app shares paths with src (in progress, held by ada): 'src/app.py' and 'src' both cover " \
           "src/app.py" in r.stderr
    # claim refuses it by name (exit 3: waiting helps), and hands out what is free
    r = run(fleet, "task", "claim", "--as", "basil", "--task", app, code=3)
    assert "task app shares paths with src (in progress, held by ada)" in r.output
    assert claim(fleet, "basil")["id"] == "web"
    r = run(fleet, "task", "claim", "--as", "basil", code=3)
    assert "1 held back while a task in flight shares their paths, such as app" in r.output
    listed = {t["id"]: t for t in tasks(fleet)["tasks"]}
    assert (listed[app]["paths_held_by"], listed["later"]["paths_held_by"]) == ("src", "src")
    assert "[paths held by src]" in run(fleet, "task", "list").output
    # once src is done, app goes out; and later waits for app as deps say
    run(fleet, "task", "complete", "src", "--fence", "1")
    assert claim(fleet, "basil")["id"] == app
    assert "paths: src/app.py, docs" in run(fleet, "task", "show", app).output


def test_bad_paths_are_refused_by_flag_and_on_the_branch(fleet: Fleet) -> None:
    r = run(fleet, "task", "add", "x", "--path", "ok", "--path", "../secrets", code=2)
    assert r.output.strip() == "fleet: --path '../secrets': no empty, '.' or '..' names in a path"
    assert fleet.git.rev_parse(f"refs/heads/{BRANCH}") is None
    # a task file edited by hand on the branch is named, with the rule, never a traceback
    t = add(fleet, "fine", "--path", "src")
    tip = fleet.git.rev_parse(f"refs/heads/{BRANCH}")
    doc = json.loads(fleet.git.show(tip, task_path(t)))
    doc["paths"] = ["src", "a/../../b"]
    bad = fleet.git.write_commit(tip, "by hand\n", {task_path(t): json.dumps(doc).encode()}, [])
    fleet.git.update_ref(f"refs/heads/{BRANCH}", bad, tip)
    for args, code in ((["task", "list"], 0), (["task", "claim", "--as", "ada"], 3)):
        r = run(fleet, *args, code=code)
        assert f"{BRANCH}:{task_path(t)}: at /paths/1: 'a/../../b': no empty, '.' or '..' names" in r.output


def test_claim_count_takes_several_ready_tasks_in_one_push(fleet: Fleet) -> None:
    """--count N: up to N ready tasks in one push, one commit and one fence each; a
    task whose paths overlap one claimed earlier in the batch is held back, and a
    task waiting for another is not handed out with it."""
    first = add(fleet, "first", "--id", "a1", "--priority", "0", "--path", "src/app.py")
    add(fleet, "overlaps a1", "--id", "a2", "--priority", "1", "--path", "src/")
    add(fleet, "after a1", "--id", "a3", "--priority", "1", "--dep", first)
    add(fleet, "free", "--id", "a4", "--priority", "2")
    add(fleet, "free too", "--id", "a5", "--priority", "3")
    tip = fleet.git.text("rev-parse", f"refs/heads/{BRANCH}")
    got = json.loads(run(fleet, "task", "claim", "--as", "ada", "--count", "3", "--json").output)["tasks"]
    assert [(t["id"], t["fence"], t["claimed_by"]) for t in got] == [("a1", 1, "ada"), ("a4", 1, "ada"), ("a5", 1, "ada")]
    assert commits(fleet, f"{tip}..refs/heads/{BRANCH}") == [
        "task claim a5 by ada (fence 1)", "task claim a4 by ada (fence 1)", "task claim a1 by ada (fence 1)"]
    assert claim(fleet, "basil", code=3)["exit"] == 3  # a2: a1 holds its paths; a3 waits for a1
    run(fleet, "task", "complete", "a1", "--fence", "1")
    got = json.loads(run(fleet, "task", "claim", "--as", "basil", "--count", "5", "--json").output)["tasks"]
    assert sorted(t["id"] for t in got) == ["a2", "a3"]  # fewer than asked for: all there is
    r = run(fleet, "task", "claim", "--as", "basil", "--count", "2", code=3)
    assert "no task is ready for basil" in r.output
    r = run(fleet, "task", "claim", "--as", "basil", "--count", "2", "--task", "a2", code=2)
    assert "--count" in r.output
    run(fleet, "task", "claim", "--as", "basil", "--count", "0", code=2)


@pytest.mark.parametrize("where, args", [
    ("title", ["add", "rotate sk-ant-test-SECRET123 now"]),
    ("body", ["add", "rotate the key", "--body", "it is\nsk-ant-test-SECRET123"]),
    ("--result", ["complete", "{id}", "--fence", "1", "--result", '{"key": "sk-ant-test-SECRET123"}']),
    ("--reason", ["fail", "{id}", "--fence", "1", "--reason", "the key sk-ant-test-SECRET123 was refused"]),
])
def test_a_persons_text_holding_a_key_is_refused_not_queued_masked(fleet: Fleet, monkeypatch: pytest.MonkeyPatch,
                                                                     where: str, args: list[str]) -> None:
    """Every text a person gives the queue reaches a commit; one holding a key
    would be stored as [REDACTED] without a word: it is refused, nothing written."""
    a = add(fleet, "a task")
    claim(fleet, "ada")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-SECRET123")
    before = fleet.git.text("for-each-ref", "refs/heads/")
    r = run(fleet, "task", *[x.replace("{id}", a) for x in args], code=1)
    [line] = r.output.strip().splitlines()
    assert f"{where}: holds the value of ANTHROPIC_API_KEY" in line and "SECRET123" not in line, line
    assert fleet.git.text("for-each-ref", "refs/heads/") == before


def test_add_dry_run_says_what_it_would_add_and_pushes_nothing(fleet: Fleet) -> None:
    before = fleet.git.text("for-each-ref", "refs/heads/")
    out = run(fleet, "task", "add", "only checked", "--id", "dry-1", "--dry-run").output
    assert "would add dry-1" in out and "added dry-1" not in out and "nothing pushed" in out
    assert fleet.git.text("for-each-ref", "refs/heads/") == before
    assert "added dry-1" in run(fleet, "task", "add", "only checked", "--id", "dry-1").output


# -- a bad file on the queue's branch is quarantined, never the end of the queue ----------------
_NAME = st.text(alphabet=st.sampled_from("abcXYZ019-_. é"), min_size=1, max_size=12).filter(
    lambda n: n.strip(" ") == n and n not in (".", ".."))


@st.composite
def bad_files(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(what, path, content): a file no task can be read from, in the folders the queue reads."""
    what = draw(st.sampled_from(["not json", "wrong schema", "symlink", "gitlink", "misnamed", "worker misnamed",
                                 "not utf-8"]))
    folder = draw(st.sampled_from(["tasks/ab/", "tasks/", "workers/"])) if what in ("not json", "symlink", "gitlink") \
        else "workers/" if what == "worker misnamed" else "tasks/ab/"
    path = folder + ("\udcff" if what == "not utf-8" else "") + draw(_NAME) + draw(st.sampled_from([".json", "", ".txt"]))
    if what == "not json":
        content = draw(st.sampled_from([b"{not json", b"", b"\xff\xfe", b"[1, 2", b'{"id": "x", "id": "y"}']))
    elif what == "wrong schema":
        content = json.dumps(draw(st.sampled_from([{"id": "x"}, [], {"id": "x", "title": 3}, "a string"]))).encode()
    elif what == "symlink":
        content = draw(st.sampled_from([b"../../state/config.json", b"/etc/passwd", b"elsewhere.json"]))
    elif what in ("misnamed", "not utf-8"):  # a valid task filed under a name that is not its id
        content = json.dumps(_a_task("real-id")).encode()
    elif what == "worker misnamed":
        content = json.dumps({"worker": "w9", "status": "dead", "last_tick": 1, "since": 2, "reason": "x",
                              "updated_at": "2026-11-22T12:38:12.345Z"}).encode()
    else:
        content = b""
    return what, path, content


def _a_task(task_id: str) -> dict:
    return {"id": task_id, "title": "t", "status": "pending", "priority": 2, "deps": [], "for": None, "fence": 0,
            "attempts": 0, "failures": 0, "claimed_by": None, "claimed_at": None, "lease_until": None,
            "not_before": None, "created_at": "2026-11-22T12:38:12.345Z", "updated_at": "2026-11-22T12:38:12.345Z"}


def _commit_bad_file(f: Fleet, what: str, path: str, content: bytes) -> None:
    """A commit on the queue's branch that adds one bad file (a link or a submodule with its mode)."""
    env = dict(os.environ, GIT_INDEX_FILE=str(f.path / ".git" / "bad-index"))
    g = ["git", "-c", "user.name=t", "-c", "user.email=t@x"]
    tip = f.git.text("rev-parse", f"refs/heads/{BRANCH}")
    subprocess.run([*g, "read-tree", tip], cwd=f.path, env=env, check=True)
    if what == "gitlink":
        mode, sha = "160000", tip
    else:
        sha = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=f.path, input=content, capture_output=True,
                             check=True).stdout.decode().strip()
        mode = "120000" if what == "symlink" else "100644"
    subprocess.run([*g, "update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}"], cwd=f.path, env=env, check=True)
    tree = subprocess.run([*g, "write-tree"], cwd=f.path, env=env, capture_output=True, check=True).stdout.decode().strip()
    commit = subprocess.run([*g, "commit-tree", tree, "-p", tip, "-m", "by hand"], cwd=f.path, capture_output=True,
                            check=True).stdout.decode().strip()
    f.git.update_ref(f"refs/heads/{BRANCH}", commit, tip)


@settings(max_examples=int(os.environ.get("FLEET_PROPERTY_EXAMPLES", "12")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bad=bad_files())
@example(bad=("not json", "tasks/ab/x.json", b"{not json"))
@example(bad=("wrong schema", "tasks/ab/x.json", b'{"id": "x"}'))
@example(bad=("symlink", "tasks/ab/x.json", b"../../state/config.json"))
@example(bad=("gitlink", "tasks/sub", b""))
@example(bad=("misnamed", "tasks/ab/x.json", json.dumps(_a_task("real-id")).encode()))
@example(bad=("not utf-8", "tasks/ab/\udcffx.json", json.dumps(_a_task("real-id")).encode()))
@example(bad=("worker misnamed", "workers/x.json", json.dumps(
    {"worker": "w9", "status": "dead", "last_tick": 1, "since": 2, "reason": "x", "updated_at": "2026-11-22T12:38:12.345Z"}
).encode()))
def test_a_bad_file_on_the_branch_is_quarantined_and_every_queue_command_goes_on(
        tmp_path_factory: pytest.TempPathFactory, bad: tuple[str, str, bytes]) -> None:
    """Not JSON, the wrong schema, a symbolic link, a submodule, a name that is not its
    task's: list, ready, show, claim, complete, status, the watchdog and the report all
    still work, each naming the file in one line (or in its JSON), and the file stays."""
    from fleet.commands.init import init

    what, path, content = bad
    f = Fleet(tmp_path_factory.mktemp("bad") / "fleet")
    init(f.path)
    t = add(f, "a good task")
    _commit_bad_file(f, what, path, content)
    where = f"{BRANCH}:{path}" if what != "not utf-8" else f"{BRANCH}:{path}".replace("\udcff", "\\udcff")
    listed = json.loads(run(f, "task", "list", "--json").stdout)
    assert [x["id"] for x in listed["tasks"]] == [t]
    assert [q["where"] for q in listed["quarantined"]] == [where], (what, listed["quarantined"])
    r = run(f, "task", "ready")
    assert f"warning: {where}: " in r.output and "quarantined" in r.output
    assert run(f, "task", "show", t, "--json").stdout
    c = claim(f, "ada")
    assert c["id"] == t
    r = run(f, "task", "complete", t, "--fence", str(c["fence"]))
    assert f"warning: {where}: " in r.output
    status = json.loads(run(f, "status", "--json").stdout)
    assert [q["where"] for q in status["tasks_quarantined"]] == [where]
    assert any(where in n for n in status["needs_you"])
    r = run(f, "watchdog", "--json", code=3)
    assert [q["where"] for q in json.loads(r.stdout)["quarantined"]] == [where]
    run(f, "report", "--out", str(f.path.parent / "report"))
    # left in place: a person removes it; the queue never rewrote it away
    listing = f.git.run("ls-tree", "-r", "-z", "--name-only", f"refs/heads/{BRANCH}").split(b"\0")
    assert os.fsencode(path) in listing or what == "gitlink"
