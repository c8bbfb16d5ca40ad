"""What a person's hand edit of the queue's branch, or a config change, must not do to
the rest of the queue: a dependency cycle, a dep that is not there, a task in
progress with no holder, a fence at its limit, a holder the config no longer lets
claim. Each on a fleet with a bare origin, the edit made in a clone and pushed, as
a person would; and the queue's decisions over generated queues, without git."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleet import config as config_mod
from fleet.main import cli
from fleet.tasks import BRANCH, task_path
from tests.commands.test_task import add, commit_config
from tests.commands.test_task import claim as cli_claim
from tests.conftest import Fleet, run

ROOT = Path(__file__).resolve().parents[1]
CFG = config_mod.parse((ROOT / "state/config.json").read_bytes())
AT = _dt.datetime(2026, 11, 22, 12, 0, tzinfo=_dt.UTC)
G = ["git", "-c", "user.name=person", "-c", "user.email=p@x", "-c", "commit.gpgsign=false"]


def hand_edit(f: Fleet, bare: Path, edit: dict[str, dict | None], clone: Path) -> None:
    """A person clones the fleet, edits task files on the queue's branch (None: removes
    one) and pushes, as they would by hand."""
    if not clone.exists():
        subprocess.run(["git", "clone", "--quiet", "--branch", BRANCH, str(bare), str(clone)], check=True)
    else:
        subprocess.run(["git", "pull", "--quiet", "origin", BRANCH], cwd=clone, check=True)
    for task_id, doc in edit.items():
        p = clone / task_path(task_id)
        if doc is None:
            p.unlink()
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    subprocess.run([*G, "add", "-A"], cwd=clone, check=True)
    subprocess.run([*G, "commit", "--quiet", "-m", "by hand"], cwd=clone, check=True)
    subprocess.run(["git", "push", "--quiet", "origin", BRANCH], cwd=clone, check=True)


def doc_of(bare: Path, task_id: str) -> dict:
    out = subprocess.run(["git", "show", f"refs/heads/{BRANCH}:{task_path(task_id)}"], cwd=bare, check=True,
                         capture_output=True).stdout
    return json.loads(out)


def tasks(f: Fleet, *args: str) -> dict:
    return json.loads(run(f, "task", "list", "--json", *args).stdout)  # (a quarantine warning is on stderr)


def needs(f: Fleet) -> list[str]:
    return json.loads(run(f, "status", "--json").stdout)["needs_you"]


# -- 3. a task in progress with no holder or no lease -----------------------------
@pytest.mark.parametrize("key", ["lease_until", "claimed_by", "claimed_at"])
def test_a_task_in_progress_with_a_null_holder_or_lease_is_quarantined_and_named(origin_fleet: tuple[Fleet, Path],
                                                                                  tmp_path: Path, key: str) -> None:
    f, bare = origin_fleet
    t = add(f, "held", "--id", "tk-held")
    other = add(f, "free", "--id", "tk-free")
    c = cli_claim(f, "ada", "--task", t)
    run(f, "task", "renew", t, "--fence", str(c["fence"]))  # the branch merges the claim
    doc = doc_of(bare, t)
    assert doc["status"] == "in-progress" and all(doc[k] for k in ("claimed_by", "claimed_at", "lease_until"))
    hand_edit(f, bare, {t: dict(doc, **{key: None})}, tmp_path / "person")
    where = f"{BRANCH}:{task_path(t)}"
    listed = tasks(f)
    assert [x["id"] for x in listed["tasks"]] == [other]
    [q] = listed["quarantined"]
    assert q["where"] == where and f"at /{key}: null, but a task in progress names who holds it" in q["reason"]
    out = run(f, "task", "list").output
    assert "None" not in out and f"warning: {where}: at /{key}" in out
    assert any(where in n for n in needs(f))


# -- 5. a holder the config no longer lets claim ----------------------------------
@pytest.mark.parametrize("verb", ["complete", "renew", "fail", "release"])
@pytest.mark.parametrize("how", ["agents_claim off", "claimer pattern dropped"])
def test_a_holder_finishes_what_it_holds_after_the_config_stops_its_claims(fleet: Fleet, verb: str, how: str) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    holder = "ada" if how == "agents_claim off" else "ci-7"
    if how == "claimer pattern dropped":
        cfg["tasks"] = {"claimers": ["ci-*"]}
        commit_config(fleet, cfg)
    t = add(fleet, "held")
    add(fleet, "another")
    c = cli_claim(fleet, holder)
    cfg["tasks"] = {"agents_claim": False} if how == "agents_claim off" else {"claimers": []}
    commit_config(fleet, cfg)
    run(fleet, "task", "claim", "--as", holder, code=2)  # who may claim is still asked at a claim
    extra = ["--reason", "cannot"] if verb == "fail" else []
    run(fleet, "task", verb, t, "--fence", str(c["fence"]), "--as", holder, *extra)
    # and the fence is still the authority: another name is refused as the holder
    if verb == "renew":
        r = run(fleet, "task", "renew", t, "--fence", str(c["fence"]), "--as", "basil", code=1)
        assert f"it is held by {holder}, not basil" in r.output


# -- small ones ------------------------------------------------------------------
def test_list_refuses_an_empty_agent(fleet: Fleet) -> None:
    add(fleet, "one")
    r = run(fleet, "task", "list", "--agent", "", code=2)
    assert "--agent: an empty name matches no agent" in r.output


def test_add_file_dash_reads_standard_input(fleet: Fleet) -> None:
    lines = "\n".join(json.dumps({"title": f"from stdin {i}"}) for i in range(3)) + "\n"
    r = CliRunner().invoke(cli, ["task", "-C", str(fleet.path), "add", "--file", "-", "--json"], input=lines)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["added"]) == 3
    r = CliRunner().invoke(cli, ["task", "-C", str(fleet.path), "add", "--file", "-"], input='{"title": 3}\n')
    assert r.exit_code == 1 and "standard input:1: at /title" in r.output


def test_a_bool_priority_is_named_as_json_says_it(fleet: Fleet, tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"title": "x", "priority": true}\n')
    r = run(fleet, "task", "add", "--file", str(tmp_path / "t.jsonl"), code=1)
    assert "at /priority: true is not a whole number" in r.output
