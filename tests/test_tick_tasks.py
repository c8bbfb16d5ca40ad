"""Tasks inside ticks (fleet/tick_tasks.py): handed out by a step that runs no
model, shown to the agent, reported through complete_task / fail_task in the
delta, applied by the merge with the fence. End to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import fleet_cli

from fleet import canonical


def task_fleet(tmp_path: Path, workers: str = "2") -> Path:
    """A fleet whose ada and basil work on tasks beside their usual tools; two tasks queued."""
    fleet_cli(tmp_path, "init", "f")
    repo = tmp_path / "f"
    cfg = json.loads((repo / "state/config.json").read_bytes())
    cfg["agents"]["ada"]["actions"] = ["post", "comment", "complete_task", "fail_task"]
    cfg["agents"]["basil"]["actions"] = ["remember", "complete_task"]
    (repo / "state/config.json").write_bytes(canonical.dumps(cfg))
    git(repo, "commit", "-qam", "ada and basil work on tasks")
    origin = tmp_path / "origin.git"  # the fleet's remote, as on GitHub
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(origin)], check=True)
    git(repo, "config", "fleet.remote", origin.as_uri())
    (repo / "t.jsonl").write_text('{"id": "fix-a", "title": "Fix the flaky test", "body": "tests/test_x.py fails 1 in 5"}\n'
                                  '{"id": "fix-b", "title": "Write the changelog"}\n'
                                  '{"id": "fix-c", "title": "Then release", "deps": ["fix-a", "fix-b"]}\n')
    p = fleet_cli(repo, "task", "add", "--file", "t.jsonl")
    assert p.returncode == 0, p.stderr
    return repo


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def task_json(repo: Path, task_id: str) -> dict[str, Any]:
    p = fleet_cli(repo, "task", "show", task_id, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_agents_work_tasks_inside_ticks_and_the_merge_completes_them_with_the_fence(tmp_path: Path) -> None:
    repo = task_fleet(tmp_path)
    p = fleet_cli(repo, "run", "--ticks", "3", "--provider", "offline")
    assert p.returncode == 0, p.stderr
    done = {t: task_json(repo, t) for t in ("fix-a", "fix-b", "fix-c")}
    assert all(t["status"] in ("done", "pending", "in-progress") for t in done.values())
    finished = [t for t in done.values() if t["status"] == "done"]
    assert finished, done
    for t in finished:
        assert t["claimed_by"] in ("ada", "basil") and t["result"].startswith(t["claimed_by"])
    # the outcome travelled in a delta the merge applied: the ledger on main holds it
    origin = ["git", "--git-dir", str(repo.parent / "origin.git")]
    ledger = subprocess.run([*origin, "log", "-p", "main", "--", "state/ledger/"], capture_output=True, text=True).stdout
    assert '"outcome":"done"' in ledger.replace(" ", "")
    # nobody else ever held them: no fence handed out twice for one attempt
    for t in finished:
        assert t["fence"] == t["attempts"]


def test_a_completion_whose_lease_ran_out_is_refused_and_recorded_not_lost(tmp_path: Path) -> None:
    repo = task_fleet(tmp_path)
    p = fleet_cli(repo, "task", "hand-out", "--json")
    assert p.returncode == 0, p.stderr
    claimed = json.loads(p.stdout)["claimed"]
    assert set(claimed) == {"ada", "basil"}
    ada_task, fence = claimed["ada"]["id"], claimed["ada"]["fence"]
    # the workers run (no credential needed to read the queue) and push their deltas
    for w in ("1", "2"):
        p = fleet_cli(repo, "work", "--worker", w, "--workers", "2", "--provider", "offline")
        assert p.returncode == 0, p.stderr
    # meanwhile ada's lease is gone and cleo holds the task with a newer fence
    assert fleet_cli(repo, "task", "release", ada_task, "--fence", str(fence), "--as", "ada").returncode == 0
    assert fleet_cli(repo, "task", "sling", ada_task, "cleo").returncode == 0  # a person hands it on at once
    p = fleet_cli(repo, "task", "claim", "--task", ada_task, "--as", "cleo", "--json")
    assert p.returncode == 0, p.stderr
    p = fleet_cli(repo, "merge", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    refused = report["tasks"]["refused"]
    assert [(r["task"], r["agent"], r["fence"]) for r in refused] == [(ada_task, "ada", fence)]
    assert "stale" in refused[0]["why"]
    t = task_json(repo, ada_task)
    assert t["status"] == "in-progress" and t["claimed_by"] == "cleo" and t["fence"] == fence + 1
    # recorded: the tick's commit says so, and ada's delta with her result is in the ledger
    origin = ["git", "--git-dir", str(repo.parent / "origin.git")]
    msg = subprocess.run([*origin, "log", "-1", "--format=%B", "main"], capture_output=True, text=True).stdout
    assert f"Task outcome refused: ada reported {ada_task}" in msg
    assert report["applied"] >= 2


def test_tick_agents_without_task_tools_get_no_task_and_none_is_offered(tmp_path: Path) -> None:
    repo = task_fleet(tmp_path)
    p = fleet_cli(repo, "task", "hand-out", "--json")
    out = json.loads(p.stdout)
    assert set(out["claimed"]) | set(out["holding"]) | set(out["idle"]) == {"ada", "basil"}
    p = fleet_cli(repo, "task", "hand-out", "--json")  # a rerun claims nothing new
    again = json.loads(p.stdout)
    assert again["claimed"] == {} and set(again["holding"]) == {"ada", "basil"}


def test_on_claude_the_turn_sees_its_task_and_reports_it_through_a_tool(tmp_path: Path) -> None:
    import asyncio
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fleet.providers.anthropic import AnthropicProvider
    from fleet.state import MemorySnapshot
    from fleet.streams import run_turns
    from tests.servers.anthropic_api import AnthropicAPI, reply, tool_use

    repo = Path(__file__).resolve().parents[1]
    files = {p.relative_to(repo).as_posix(): p.read_bytes() for d in ("state", "schemas") for p in (repo / d).rglob("*.json")}
    cfg = json.loads(files["state/config.json"])
    cfg["agents"]["ada"]["actions"] = ["post", "complete_task"]
    files["state/config.json"] = canonical.dumps(cfg)
    snap = MemorySnapshot(files)
    task = {"id": "fix-a", "fence": 4, "title": "Fix the flaky test", "body": "tests/test_x.py fails 1 in 5"}
    with AnthropicAPI() as api:
        api.script(reply(tool_use("complete_task", {"task": "fix-a", "result": "pinned the seed"})), agent="ada")
        api.script(reply(tool_use("complete_task", {"task": "fix-a", "result": "not mine"})), agent="basil")
        provider = AnthropicProvider(snap.config, api_key="sk-ant-test-" + "k" * 24, base_url=api.url)

        async def go() -> list[dict[str, Any]]:
            try:
                return await run_turns(provider, snap, ["ada", "basil"], tick=1, worker="w1", tasks={"ada": task})
            finally:
                await provider.aclose()

        bodies = {b["agent"]: b for b in asyncio.run(go())}
        seen = {s.agent: s for s in api.requests}
    assert [t["name"] for t in seen["ada"].body["tools"]] == ["post", "do_nothing", "complete_task"]
    assert "complete_task" not in [t["name"] for t in seen["basil"].body["tools"]]  # basil has no task tools
    assert "Your task this tick: fix-a: Fix the flaky test" in seen["ada"].system_text
    assert bodies["ada"]["meta"]["tasks"] == [{"task": "fix-a", "fence": 4, "outcome": "done", "result": "pinned the seed"}]
    assert "noop" not in bodies["ada"]["meta"] and bodies["ada"]["ops"] == []
    assert "tasks" not in bodies["basil"]["meta"] and "complete_task" in bodies["basil"]["meta"]["rejected"][0]["reason"]


def test_agents_with_task_tools_and_no_queue_yet_take_their_turns(tmp_path: Path) -> None:
    """No task was ever added: there is no queue branch, and that means no task, not a failed worker."""
    fleet_cli(tmp_path, "init", "f")
    repo = tmp_path / "f"
    cfg = json.loads((repo / "state/config.json").read_bytes())
    cfg["agents"]["ada"]["actions"] = ["post", "comment", "complete_task"]
    (repo / "state/config.json").write_bytes(canonical.dumps(cfg))
    git(repo, "commit", "-qam", "ada works on tasks")
    p = fleet_cli(repo, "run", "--ticks", "2", "--workers", "2", "--json")
    assert p.returncode == 0, p.stderr
    ticks = json.loads(p.stdout)["ticks"]
    assert all(t["delivered"] == t["workers"] for t in ticks), ticks
    assert "could not fetch the task queue" not in p.stderr


def test_every_reader_of_the_queue_sees_a_claim_the_branch_has_not_merged(tmp_path: Path) -> None:
    """`fleet task claim` lands on the task's claim ref, not on the branch: list, show, ready,
    status, the watchdog, the hand-out and `fleet work`'s read-only view all see it all the same."""
    from fleet import config as config_mod
    from fleet.commands.work import _held_tasks
    from fleet.workspace import Workspace

    repo = task_fleet(tmp_path)
    p = fleet_cli(repo, "task", "claim", "--as", "ada", "--task", "fix-a", "--json")
    assert p.returncode == 0, p.stderr
    fence = json.loads(p.stdout)["fence"]
    origin = ["git", "--git-dir", str(tmp_path / "origin.git")]
    on_branch = subprocess.run([*origin, "show", f"fleet/tasks:{json.loads(p.stdout)['path']}"], capture_output=True,
                               text=True, check=True).stdout
    assert json.loads(on_branch)["status"] == "pending"  # the branch alone says pending: it is no view of the queue
    t = task_json(repo, "fix-a")
    assert (t["status"], t["claimed_by"], t["fence"]) == ("in-progress", "ada", fence)
    assert [h["what"].split(" ")[1] for h in t["history"]] == ["add", "claim"]
    listed = json.loads(fleet_cli(repo, "task", "list", "--status", "in-progress", "--json").stdout)["tasks"]
    assert [x["id"] for x in listed] == ["fix-a"]
    ready = json.loads(fleet_cli(repo, "task", "ready", "--json").stdout)["tasks"]
    assert [x["id"] for x in ready] == ["fix-b"]
    status = json.loads(fleet_cli(repo, "status", "--json").stdout)
    assert (status["tasks"]["in-progress"], status["tasks"]["pending"]) == (1, 2)
    assert fleet_cli(repo, "watchdog", "--json").returncode == 3  # ada's lease is current: nothing to return
    # the hand-out finds ada holding fix-a, and gives basil the other ready one
    p = fleet_cli(repo, "task", "hand-out", "--json")
    out = json.loads(p.stdout)
    assert out["holding"]["ada"]["id"] == "fix-a" and out["claimed"]["basil"]["id"] == "fix-b", out
    # a worker, which only reads the queue, shows ada her task
    gitdir = Path(subprocess.run(["git", "rev-parse", "--absolute-git-dir"], cwd=repo, capture_output=True,
                                 text=True, check=True).stdout.strip())
    cfg = config_mod.parse((repo / "state/config.json").read_bytes())
    with Workspace(gitdir, "w1") as ws:
        held = _held_tasks(ws, (tmp_path / "origin.git").as_uri(), cfg, ["ada", "basil"])
    assert (held["ada"]["id"], held["ada"]["fence"]) == ("fix-a", fence)
    assert held["basil"]["id"] == "fix-b"
