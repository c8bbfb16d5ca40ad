"""`fleet watchdog`: expired leases go back, dead workers are marked, each with a
commit that says why, and a run with nothing to do commits nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.git import Git
from fleet.tasks import BRANCH, task_path, worker_path
from tests.commands.test_task import add, claim, commit_config, commits
from tests.conftest import Fleet, run


def watchdog(f: Fleet, *args: str, code: int = 0) -> dict:
    r = run(f, "watchdog", "--json", *args, code=code)
    return json.loads(r.output[r.output.index("{"):])


def test_an_expired_lease_goes_back_with_a_commit_that_says_why(fleet: Fleet) -> None:
    t = add(fleet, "slow job")
    keep = add(fleet, "renewed job")
    c = claim(fleet, "ada", "--lease", "1", "--task", t)
    claim(fleet, "basil", "--lease", "1", "--task", keep)
    # nothing has run out by more than a minute: how long the claims took on a busy machine does not matter
    assert watchdog(fleet, "--grace", "60", code=3)["commits"] == 0
    time.sleep(0.6)
    run(fleet, "task", "renew", keep, "--fence", "1", "--lease", "60")
    time.sleep(0.6)
    s = json.loads(run(fleet, "status", "--json").output)
    assert s["tasks"]["expired"] == 1
    before = commits(fleet)
    dry = watchdog(fleet, "--dry-run", "--grace", "0")
    assert [r["id"] for r in dry["returned"]] == [t] and not dry["pushed"] and commits(fleet) == before
    r = watchdog(fleet, "--grace", "0")
    assert [x["id"] for x in r["returned"]] == [t] and r["commits"] == 1 and r["pushed"]
    msg = fleet.git.text("log", "-1", "--format=%B", f"refs/heads/{BRANCH}")
    assert msg.startswith(f"watchdog: return {t}: lease of ada ran out")
    assert "(fence 1) ran out at" in msg and "Ready again at" in msg
    doc = json.loads(fleet.git.show(f"refs/heads/{BRANCH}", task_path(t)))
    assert (doc["status"], doc["claimed_by"], doc["fence"], doc["failures"]) == ("pending", None, c["fence"], 1)
    # the default retry delay keeps it back, and claim says until when
    r = run(fleet, "task", "claim", "--as", "cleo", code=3)
    assert "the next is ready at" in r.output
    # the renewed lease was left alone; a second run has nothing to do
    assert json.loads(fleet.git.show(f"refs/heads/{BRANCH}", task_path(keep)))["status"] == "in-progress"
    assert watchdog(fleet, code=3)["commits"] == 0
    assert fleet.git.text("rev-list", "--count", "refs/heads/main") == "1"  # main is never written


def test_a_task_whose_leases_keep_running_out_is_failed_for_a_person(fleet: Fleet) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["tasks"] = {"retry_delay_seconds": 0, "max_failures": 2, "grace_seconds": 0}
    commit_config(fleet, cfg)
    t = add(fleet, "poison")
    for attempt in (1, 2):
        assert claim(fleet, "ada", "--lease", "1")["fence"] == attempt
        time.sleep(1.05)
        r = watchdog(fleet)
    assert r["failed"][0]["id"] == t and r["returned"] == []
    doc = json.loads(fleet.git.show(f"refs/heads/{BRANCH}", task_path(t)))
    assert (doc["status"], doc["failures"]) == ("failed", 2)
    assert "given up until a person looks" in fleet.git.text("log", "-1", "--format=%B", f"refs/heads/{BRANCH}")


def test_workers_a_smaller_run_leaves_out_are_not_marked_dead(fleet: Fleet) -> None:
    run(fleet, "run", "--ticks", "1", "--workers", "3")
    assert watchdog(fleet, code=3)["workers"] == []  # alive workers need no record
    run(fleet, "run", "--ticks", "3", "--workers", "1")
    # w2 and w3 have no agents at one worker: not dead, and no record (tests/test_health_plan.py marks and
    # brings back a worker of the plan that stopped delivering)
    assert watchdog(fleet, code=3)["workers"] == []
    s = json.loads(run(fleet, "status", "--json").output)
    assert {w["worker"]: w["status"] for w in s["workers"]} == {"w1": "alive"}
    run(fleet, "run", "--ticks", "1", "--workers", "2")
    assert watchdog(fleet, code=3)["workers"] == []
    s = json.loads(run(fleet, "status", "--json").output)
    assert {w["worker"]: w["status"] for w in s["workers"]} == {"w1": "alive", "w2": "alive"}


def test_a_worker_record_in_the_old_spelling_is_read_and_rewritten_in_the_new(fleet: Fleet) -> None:
    add(fleet, "placeholder")  # the branch exists
    old = {"worker": "w9", "status": "dead", "lastTick": 0, "since": 0, "reason": "by hand",
           "updatedAt": "2020-01-01T00:00:00.000Z"}
    tip = fleet.git.rev_parse(f"refs/heads/{BRANCH}")
    hand = fleet.git.write_commit(tip, "by hand, in the old spelling\n", {worker_path("w9"): json.dumps(old).encode()}, [])
    fleet.git.update_ref(f"refs/heads/{BRANCH}", hand, tip)
    s = json.loads(run(fleet, "status", "--json").output)
    assert [(w["worker"], w["last_tick"], w["marked"]) for w in s["workers"]] == [("w9", 0, "dead")]
    assert watchdog(fleet)["workers"][0]["status"] == "alive"  # main is at tick 0, which w9 delivered
    doc = json.loads(fleet.git.show(f"refs/heads/{BRANCH}", worker_path("w9")))
    assert (doc["status"], doc["last_tick"]) == ("alive", 0) and "updated_at" in doc and "lastTick" not in doc


def run_origin(f: Fleet) -> Path:
    assert f.git.text("config", "--get", "fleet.remote") == "embedded"
    return f.path / ".git" / "fleet" / "origin.git"


def test_a_stalled_merge_is_reported_not_blamed_on_workers(fleet: Fleet) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["run"]["deadline_seconds"] = 0.2
    commit_config(fleet, cfg)
    env = dict(**__import__("os").environ)
    subprocess.run([sys.executable, "-m", "fleet", "work", "-C", str(fleet.path), "--worker", "1", "--workers", "2"],
                   check=True, capture_output=True, env=env)
    time.sleep(0.5)
    r = watchdog(fleet)
    assert "1 worker branch has waited up to" in r["stalled"] and "is the merge running?" in r["stalled"]
    assert r["commits"] == 0
    s = json.loads(run(fleet, "status", "--json").output)
    assert s["stalled"] and "is the merge running?" in run(fleet, "status").output


def test_two_watchdogs_at_once_return_a_lease_once(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    f, bare = origin_fleet
    add(f, "one")
    claim(f, "ada", "--lease", "1")
    time.sleep(1.1)
    clones = []
    for i in range(4):
        d = tmp_path / f"dog{i}"
        subprocess.run(["git", "clone", "-q", str(bare), str(d)], check=True)
        clones.append(d)
    procs = [subprocess.Popen([sys.executable, "-m", "fleet", "watchdog", "-C", str(d), "--json", "--grace", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for d in clones]
    outs = [(p.wait(timeout=120), p.stdout.read()) for p in procs]
    assert sorted(code for code, _ in outs) == [0, 3, 3, 3], outs
    log = Git(bare).text("log", "--format=%s", f"refs/heads/{BRANCH}").splitlines()
    assert sum(1 for line in log if line.startswith("watchdog: return")) == 1


def test_a_holder_still_starting_is_left_alone_for_the_grace(fleet: Fleet) -> None:
    """Gas Town does not kill a worker that is still starting: a task claimed less
    than tasks.grace_seconds ago (60 by default) stays with its holder, lease or not."""
    t = add(fleet, "slow to start")
    claim(fleet, "ada", "--lease", "1")
    time.sleep(1.1)
    r = watchdog(fleet, code=3)
    assert r["returned"] == [] and [s["id"] for s in r["starting"]] == [t] and r["starting"][0]["grace_seconds"] == 60
    text = run(fleet, "watchdog", code=3).output
    assert f"left alone {t}: lease of ada ran out, but it was claimed" in text and "(tasks.grace_seconds)" in text
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["tasks"] = {"grace_seconds": 1}
    commit_config(fleet, cfg)
    assert [x["id"] for x in watchdog(fleet)["returned"]] == [t]  # claimed over a second ago: the grace is over
    assert "Traceback" not in run(fleet, "watchdog", "--grace", str(10**12), code=2).output


def test_a_task_that_fails_too_often_is_escalated_and_status_flags_it(fleet: Fleet) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["tasks"] = {"max_failures": 2, "retry_delay_seconds": 0}
    commit_config(fleet, cfg)
    t = add(fleet, "poison")
    ok = add(fleet, "fine")
    for n in (1, 2):
        c = claim(fleet, "ada", "--task", t)
        run(fleet, "task", "fail", t, "--fence", str(c["fence"]), "--reason", f"tests red {n}")
    doc = json.loads(fleet.git.show(f"refs/heads/{BRANCH}", task_path(t)))
    assert (doc["status"], doc["failures"]) == ("failed", 2) and doc["escalated_at"] >= doc["created_at"]
    assert "escalated" in fleet.git.text("log", "-1", "--format=%B", f"refs/heads/{BRANCH}")
    s = json.loads(run(fleet, "status", "--json").output)
    assert [(e["id"], e["failures"], e["error"]) for e in s["escalated"]] == [(t, 2, "tests red 2")]
    text = run(fleet, "status").output
    assert f"ESCALATED: 1 task(s) failed tasks.max_failures times and wait for a person: {t} (2 failures: tests red 2)" in text
    r = watchdog(fleet, code=3)  # nothing to return; it names what waits for a person
    assert r["escalated"] == [t] and r["issues"] is None  # tasks.escalate is "none": no issue
    run(fleet, "task", "reopen", t)
    doc = json.loads(fleet.git.show(f"refs/heads/{BRANCH}", task_path(t)))
    assert "escalated_at" not in doc and doc["status"] == "pending"
    s = json.loads(run(fleet, "status", "--json").output)
    assert s["escalated"] == [] and "ESCALATED" not in run(fleet, "status").output
    assert ok


# -- one GitHub issue per escalated task, through PyGithub and a local GitHub --------
def test_escalated_tasks_get_one_issue_each_found_again_by_its_marker(origin_fleet: tuple[Fleet, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.commands.watchdog import watchdog as run_watchdog
    from fleet.github import TASK_LABEL, GitHubSettings
    from tests.servers.github_api import TEST_TOKEN, GitHubAPI

    f, bare = origin_fleet
    cfg = json.loads((f.path / "state/config.json").read_text())
    cfg["tasks"] = {"max_failures": 1, "retry_delay_seconds": 0, "grace_seconds": 0, "escalate": "issue"}
    commit_config(f, cfg)
    f.git.run("push", "-q", str(bare), "main")
    hostile = "tests red\n```\n@octocat see <script>x</script>\n````"
    one, two = add(f, "one", "--id", "one"), add(f, "two", "--id", "two")
    c = claim(f, "ada", "--task", one)
    run(f, "task", "fail", one, "--fence", str(c["fence"]), "--reason", hostile)
    claim(f, "basil", "--task", two, "--lease", "1")
    time.sleep(1.1)
    with GitHubAPI(bare_repo=bare, owner="acme", repo="fleet", token=TEST_TOKEN) as api:
        gh = GitHubSettings(api.url, "acme/fleet", TEST_TOKEN, seconds_between_writes=0)
        r = run_watchdog(f.path, github=gh)  # fails two (its lease ran out) and opens both issues
        assert [x["id"] for x in r["failed"]] == [two] and r["escalated"] == [one, two]
        assert sorted(i["task"] for i in r["issues"]["opened"]) == [one, two]
        numbers = {i["task"]: i["number"] for i in r["issues"]["opened"]}
        issue = api.issues[numbers[one]]
        assert issue.body.startswith(f"<!-- fleet-task: {one} -->") and TASK_LABEL in issue.labels
        assert issue.title == f"fleet: task {one} failed once: one"
        assert "\n`````text\ntests red\n```\n@octocat" in issue.body  # untrusted text in a fence it cannot close
        assert f"fleet task reopen {one}" in issue.body
        assert not any(TEST_TOKEN in (i.body or "") for i in api.issues.values())
        # a rerun finds them by their markers: no second issue
        r = run_watchdog(f.path, github=gh)
        assert r["issues"]["opened"] == [] and sorted(r["issues"]["unchanged"]) == sorted(numbers.values())
        assert api.count("POST", r"/issues$") == 2
        # a person reopens one: its issue is closed; a person closes two's issue by hand: it stays closed
        run(f, "task", "reopen", one)
        api.close(numbers[two])
        r = run_watchdog(f.path, github=gh)
        assert r["issues"]["closed"] == [{"task": one, "number": numbers[one]}] and r["issues"]["reopened"] == []
        assert api.issues[numbers[one]].state == "closed" and "**Closed by fleet**" in api.issues[numbers[one]].body
        # one fails again: the same issue is reopened, not a new one
        c = claim(f, "ada", "--task", one)
        run(f, "task", "fail", one, "--fence", str(c["fence"]), "--reason", "still red")
        r = run_watchdog(f.path, github=gh)
        assert r["issues"]["reopened"] == [{"task": one, "number": numbers[one]}]
        assert api.issues[numbers[one]].state == "open" and "still red" in api.issues[numbers[one]].body
        assert api.issues[numbers[two]].state == "closed" and api.count("POST", r"/issues$") == 2
        assert run_watchdog(f.path, github=gh)["issues"]["reopened"] == []
    # without GitHub settings in the job, leases are still returned and the skip is said
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    r = run(f, "watchdog", code=3)
    assert "warning: escalation issues skipped: tasks.escalate is \"issue\", but GITHUB_REPOSITORY" in r.output
