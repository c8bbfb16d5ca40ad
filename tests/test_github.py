"""Conflict pull requests through PyGithub against a local GitHub REST server
that fronts the fleet's real bare origin: open, rerun (updated, not
duplicated), merged (the choice is applied), closed (the fallback is
applied), and secondary rate limits with retry-after survived."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet

from fleet.commands.merge import merge
from fleet.delta import Op
from fleet.git import Git
from fleet.github import LABEL, GitHubSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers.github_api import TEST_TOKEN, GitHubAPI  # noqa: E402

TITLE = ("title",)


@pytest.fixture
def gh(origin_fleet: tuple[Fleet, Path]) -> Any:
    fleet, bare = origin_fleet
    with GitHubAPI(bare_repo=bare, owner="acme", repo="fleet", token=TEST_TOKEN) as api:
        settings = GitHubSettings(api.url, "acme/fleet", TEST_TOKEN, seconds_between_writes=0)
        yield fleet, bare, api, settings


def main_doc(bare: Path, rel: str) -> dict[str, Any]:
    return json.loads(Git(bare).show("refs/heads/main", rel))


def push_origin(fleet: Fleet, bare: Path, *bodies: dict[str, Any]) -> None:
    """Workers' branches go to the origin, as fleet work pushes them."""
    fleet.push(*bodies)
    for ref in fleet.branches():
        fleet.git.run("push", "--quiet", str(bare), f"{ref}:{ref}")
        fleet.git.run("update-ref", "-d", ref)


def rival_titles(fleet: Fleet, tick: int, *values: str) -> list[dict[str, Any]]:
    return [fleet.delta("ada", Op("set", "posts", "ada-1", TITLE, v), tick=tick, worker=f"w{i + 1}",
                        utc=f"2026-11-22T10:00:0{i}.000000Z") for i, v in enumerate(values)]


def test_open_rerun_merge_close(gh: Any) -> None:
    fleet, bare, api, settings = gh
    before = main_doc(bare, "state/posts/ada-1.json")["title"]
    push_origin(fleet, bare, *rival_titles(fleet, 1, "First", "Second"))
    r = merge(fleet.path, remote=str(bare), github=settings)
    [opened] = r.pulls["opened"]
    pr = api.pulls[opened["number"]]
    cid = opened["conflict"]
    assert pr.state == "open" and f"<!-- fleet-conflict-id: {cid}-t1 -->" in pr.body
    assert "| choose | agent | worker | tick | utc | value |" in pr.body and '`"Second"`' in pr.body
    assert LABEL in [lbl if isinstance(lbl, str) else getattr(lbl, "name", lbl) for lbl in pr.labels]
    decision = json.loads(Git(bare).show(f"refs/heads/fleet/conflict/{cid}-t1", f"state/resolutions/{cid}.json"))
    second = [c for c in main_doc(bare, f"state/conflicts/{cid}.json")["candidates"] if c["value"] == "Second"][0]
    assert decision["choose"] == second["delta"]  # the default: the latest candidate

    # a rerun with a third value: the same pull request, updated
    push_origin(fleet, bare, *rival_titles(fleet, 2, "Third"))
    r2 = merge(fleet.path, remote=str(bare), github=settings)
    assert r2.pulls["opened"] == [] and [u["number"] for u in r2.pulls["updated"]] == [opened["number"]]
    assert api.count("POST", r"/pulls$") == 1
    assert '`"Third"`' in api.pulls[opened["number"]].body
    # ... and its resolution file follows: the default is the latest candidate again (issue 14)
    third = [c for c in main_doc(bare, f"state/conflicts/{cid}.json")["candidates"] if c["value"] == "Third"][0]
    decision = json.loads(Git(bare).show(f"refs/heads/fleet/conflict/{cid}-t1", f"state/resolutions/{cid}.json"))
    assert decision["choose"] == third["delta"]

    # the person merges it unedited: the next merge applies the default the README promises
    api.merge(opened["number"])
    r3 = merge(fleet.path, remote=str(bare), github=settings)
    assert r3.resolved == [cid]
    assert main_doc(bare, "state/posts/ada-1.json")["title"] == "Third"
    assert f"state/conflicts/{cid}.json" not in Git(bare).ls_tree("refs/heads/main", "state/")

    # another conflict, whose pull request is closed unmerged: the fallback keeps the old value
    push_origin(fleet, bare, *rival_titles(fleet, 4, "Fourth", "Fifth"))
    r4 = merge(fleet.path, remote=str(bare), github=settings)
    [second_pr] = r4.pulls["opened"]
    assert second_pr["number"] != opened["number"]
    api.close(second_pr["number"])
    r5 = merge(fleet.path, remote=str(bare), github=settings)
    assert r5.resolved == [second_pr["conflict"]] and len(r5.pulls["fallbacks"]) == 1
    assert main_doc(bare, "state/posts/ada-1.json")["title"] == "Third"  # the value before that conflict
    assert "closed without merging" in Git(bare).show("refs/heads/main", "state/ledger/5/_resolutions.jsonl").decode()

    # history stays replayable, pull request merge commit included
    clone = fleet.path.parent / "check"
    subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True)
    p = subprocess.run([sys.executable, "-m", "fleet", "replay", "--check"], cwd=clone, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert before != "Third"
    assert not any(TEST_TOKEN in (pr.body or "") for pr in api.pulls.values())


def test_a_reviewers_edit_of_the_default_is_never_overwritten(gh: Any) -> None:
    from tests.servers.github_api import commit_files

    fleet, bare, api, settings = gh
    push_origin(fleet, bare, *rival_titles(fleet, 1, "First", "Second"))
    [opened] = merge(fleet.path, remote=str(bare), github=settings).pulls["opened"]
    cid, branch = opened["conflict"], opened["branch"]
    rel = f"state/resolutions/{cid}.json"
    commit_files(bare, branch, {rel: json.dumps({"conflict": cid, "value": "Mine"})}, "my decision")
    push_origin(fleet, bare, *rival_titles(fleet, 2, "Third"))
    r2 = merge(fleet.path, remote=str(bare), github=settings)
    assert [u["number"] for u in r2.pulls["updated"]] == [opened["number"]]
    assert json.loads(Git(bare).show(f"refs/heads/{branch}", rel)) == {"conflict": cid, "value": "Mine"}
    api.merge(opened["number"])
    merge(fleet.path, remote=str(bare), github=settings)
    assert main_doc(bare, "state/posts/ada-1.json")["title"] == "Mine"


def test_secondary_rate_limits_are_waited_out(gh: Any) -> None:
    fleet, bare, api, settings = gh
    api.fail("POST", r"/pulls$", 403)  # retry-after: 1, retried by PyGithub
    push_origin(fleet, bare, *rival_titles(fleet, 1, "First", "Second"))
    r = merge(fleet.path, remote=str(bare), github=settings)
    assert len(r.pulls["opened"]) == 1
    api.fail("PATCH", r"/(issues|pulls)/\d+$", 429)  # an edit: PyGithub does not retry PATCH; fleet does
    push_origin(fleet, bare, *rival_titles(fleet, 2, "Third"))
    r2 = merge(fleet.path, remote=str(bare), github=settings)
    assert len(r2.pulls["updated"]) == 1
    statuses = [s.status for s in api.requests if s.method in ("POST", "PATCH")]
    assert 403 in statuses and 429 in statuses
    assert api.count("POST", r"/pulls$") == 2  # the refused one and its retry; one pull request exists
    assert len(api.pulls) == 1


def test_a_retried_post_that_github_did_carry_out_is_not_doubled(gh: Any) -> None:
    fleet, bare, api, settings = gh
    api.fail("POST", r"/pulls$", 502, after=True)  # made, then a 502; PyGithub retries; GitHub says 422
    push_origin(fleet, bare, *rival_titles(fleet, 1, "First", "Second"))
    r = merge(fleet.path, remote=str(bare), github=settings)
    assert len(r.pulls["opened"]) == 1 and len(api.pulls) == 1


def test_github_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.errors import FleetError

    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    with pytest.raises(FleetError, match="GITHUB_REPOSITORY"):
        GitHubSettings.from_env({})
    s = GitHubSettings.from_env({"GITHUB_REPOSITORY": "a/b", "GH_TOKEN": "tok-12345678",
                                 "GITHUB_API_URL": "http://127.0.0.1:1"})
    assert (s.repository, s.token, s.api_url) == ("a/b", "tok-12345678", "http://127.0.0.1:1")


def test_status_links_each_open_conflict_to_its_pull_request(gh: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.overview import overview

    fleet, bare, api, settings = gh
    push_origin(fleet, bare, *rival_titles(fleet, 1, "First", "Second"))
    [opened] = merge(fleet.path, remote=str(bare), github=settings).pulls["opened"]
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/fleet")
    [c] = overview(fleet.path, str(bare))["open_conflicts"]
    assert c["pr_branch"] == opened["branch"]
    assert c["pr_url"] == f"https://github.com/acme/fleet/pulls?q=is%3Apr+head%3A{opened['branch']}"
    assert c["decide"].startswith(f"fleet resolve {opened['conflict']} --choose t1-w2-")


def test_a_pull_request_whose_conflict_was_decided_another_way_is_closed(gh: Any, tmp_path: Path) -> None:
    """`fleet resolve` decides on main while the pull request waits: the next merge
    applies the decision and closes the pull request with a note, once; the
    pull request of a conflict still held stays open."""
    fleet, bare, api, settings = gh
    push_origin(fleet, bare, *rival_titles(fleet, 1, "First", "Second"))
    [opened] = merge(fleet.path, remote=str(bare), github=settings).pulls["opened"]
    clone = tmp_path / "person"
    subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True)
    for k, v in (("user.name", "Rosa Person"), ("user.email", "rosa@example.com")):
        subprocess.run(["git", "config", k, v], cwd=clone, check=True)
    p = subprocess.run([sys.executable, "-m", "fleet", "resolve", opened["conflict"], "--value", '"By hand"'],
                       cwd=clone, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # the decision is on main but not applied yet: the conflict is still held, its pull request stays open
    again = merge(fleet.path, remote=str(bare), github=settings)
    assert again.resolved == [opened["conflict"]]
    assert main_doc(bare, "state/posts/ada-1.json")["title"] == "By hand"
    assert again.pulls["closed"] == [{"conflict": opened["conflict"], "number": opened["number"]}]
    pr = api.pulls[opened["number"]]
    assert pr.state == "closed" and not pr.merged and "Closed by fleet" in pr.body
    # a later merge has nothing more to close; a new conflict's pull request stays open
    push_origin(fleet, bare, *rival_titles(fleet, 3, "Third", "Fourth"))
    later = merge(fleet.path, remote=str(bare), github=settings)
    assert later.pulls["closed"] == [] and len(later.pulls["opened"]) == 1
    assert api.pulls[later.pulls["opened"][0]["number"]].state == "open"
