"""The example worlds (fleet/examples/), end to end, as a user runs them.

Each example is made with `fleet init DIR --example NAME` and run with
`fleet run` as a subprocess, on the offline provider and on the anthropic
provider against the local Messages API (tests/servers/anthropic_api.py);
then `fleet replay --check` and `fleet validate` must pass, and the ops that
were applied must be in the example's own collections.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.servers` from any working directory

from fleet.git import Git  # noqa: E402
from fleet.template import examples  # noqa: E402
from tests.servers.anthropic_api import AnthropicAPI  # noqa: E402

KEY = "sk-ant-test-" + "e" * 24
EXAMPLES = ["social", "tickets"]


def env(tmp_path: Path, api: AnthropicAPI | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("ANTHROPIC_") and k not in ("GITHUB_TOKEN", "GH_TOKEN")}
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    e["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    if api is not None:
        e["ANTHROPIC_BASE_URL"] = api.url
        e["ANTHROPIC_API_KEY"] = KEY
    return e


def fleet(cwd: Path, *args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "fleet", *args], cwd=cwd, capture_output=True, text=True,
                       env=env, timeout=300)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    assert p.returncode == code, (args, p.stdout, p.stderr)
    return p


def new_fleet(tmp_path: Path, example: str) -> Path:
    repo = tmp_path / example
    out = json.loads(fleet(tmp_path, "init", str(repo), "--example", example, "--json", env=env(tmp_path)).stdout)
    assert out["example"] == example and out["tick"] == 0
    return repo


def merged(repo: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(applied deltas, quarantined records) of every tick, each read from its
    tick's commit on main (the embedded origin's): the tree keeps only
    limits.window ticks of them."""
    git = Git(repo / ".git" / "fleet" / "origin.git")
    out: dict[str, list[dict[str, Any]]] = {"ledger": [], "quarantine": []}
    for commit in git.text("rev-list", "--reverse", "refs/heads/main").split()[1:]:
        message = git.text("show", "-s", "--format=%B", commit)
        tick = next(int(line.split()[1]) for line in message.splitlines() if line.startswith("Fleet-Tick:"))
        for kind, found in out.items():
            for path in git.text("ls-tree", "-r", "--name-only", commit, f"state/{kind}/{tick}").split():
                found += [json.loads(line) for line in (git.show(commit, path) or b"").splitlines() if line.strip()]
    return out["ledger"], out["quarantine"]


def collections_of(repo: Path) -> set[str]:
    return set(json.loads((repo / "state" / "config.json").read_text())["collections"])


def check_run(repo: Path, tmp_path: Path, ticks: int, agents: int,
              most: bool = True) -> tuple[list[dict[str, Any]], Counter[tuple[str, str]]]:
    """The ticks merged every agent's delta, with ops in the world's own
    collections (``most``: most deltas have ops, few calls were rejected);
    replay reproduces main; the files validate."""
    applied, quarantined = merged(repo)
    assert len(applied) + len(quarantined) == ticks * agents
    with_ops = [d for d in applied if d["ops"]]
    assert len(quarantined) <= len(applied) // 4, quarantined
    ops = Counter((o["op"], o["collection"]) for d in applied for o in d["ops"])
    assert ops and {c for _, c in ops} <= collections_of(repo), ops
    rejected = sum(len(d["meta"].get("rejected", [])) for d in applied)
    if most:
        assert len(with_ops) > len(applied) * 3 // 4 and rejected < len(applied) // 4, (len(with_ops), rejected)
    check = json.loads(fleet(repo, "replay", "--check", "--json", env=env(tmp_path)).stdout)
    assert check["identical"] is True
    assert "0 problem(s)" in fleet(repo, "validate", env=env(tmp_path)).stdout
    return applied, ops


# -- the examples on the offline provider ------------------------------------

@pytest.mark.parametrize("example", EXAMPLES)
def test_an_example_runs_on_the_offline_provider(tmp_path: Path, example: str) -> None:
    repo = new_fleet(tmp_path, example)
    p = fleet(repo, "run", "--ticks", "3", "--workers", "2", "--provider", "offline", "--json", env=env(tmp_path))
    report = json.loads(p.stdout)
    agents = len(json.loads((repo / "state" / "config.json").read_text())["agents"])
    assert report["provider"] == "offline" and report["applied"] == 3 * agents, report
    applied, ops = check_run(repo, tmp_path, 3, agents)
    assert len({c for _, c in ops}) >= 3, ops  # the world's collections, not one of them
    assert {d["meta"]["provider"] for d in applied} == {"offline"}


def test_the_tickets_example_exercises_what_the_social_network_does_not(tmp_path: Path) -> None:
    """Ten ticks of the software team: sets of others' documents through grants
    and @self rules, deletes, set members added and removed, documents created
    for another owner; almost every delta applies."""
    repo = new_fleet(tmp_path, "tickets")
    fleet(repo, "run", "--ticks", "10", "--workers", "2", "--provider", "offline", env=env(tmp_path))
    applied, ops = check_run(repo, tmp_path, 10, 6)
    assert len([d for d in applied if d["ops"]]) >= 50
    for op in (("create", "tickets"), ("set", "tickets"), ("add", "tickets"), ("remove", "tickets"),
               ("create", "comments"), ("delete", "comments"), ("create", "reviews"), ("append", "staff")):
        assert ops[op] > 0, (op, ops)
    git = Git(repo / ".git" / "fleet" / "origin.git")
    tickets = [json.loads(git.show("refs/heads/main", p) or b"")
               for p in git.text("ls-tree", "-r", "--name-only", "refs/heads/main", "state/tickets").split()]
    assert all(p.count("/") == 3 for p in git.text("ls-tree", "-r", "--name-only", "refs/heads/main", "state/tickets").split())
    # a ticket's status is set by agents that are not its reporter (grants), as the world means it to be
    others = [(d["agent"], o["id"]) for d in applied for o in d["ops"]
              if (o["op"], o["collection"], o.get("path")) == ("set", "tickets", ["status"])]
    reporters = {t["id"]: t["reporter"] for t in tickets}
    assert any(reporters.get(tid) not in (None, agent) for agent, tid in others)
    # the triager only ever triaged, labelled, commented and took notes
    tess = Counter((o["op"], o["collection"]) for d in applied if d["agent"] == "tess" for o in d["ops"])
    assert set(tess) <= {("set", "tickets"), ("add", "tickets"), ("remove", "tickets"), ("create", "comments"),
                         ("incr", "tickets"), ("append", "staff")}, tess


# -- the examples on the anthropic provider ----------------------------------

@pytest.mark.parametrize("example", EXAMPLES)
def test_an_example_runs_on_the_anthropic_provider(tmp_path: Path, example: str) -> None:
    repo = new_fleet(tmp_path, example)
    agents = sorted(json.loads((repo / "state" / "config.json").read_text())["agents"])
    with AnthropicAPI() as api:
        p = fleet(repo, "run", "--ticks", "2", "--workers", "2", "--provider", "anthropic", "--json",
                  env=env(tmp_path, api))
        assert api.errors == []
        seen = api.requests
    report = json.loads(p.stdout)
    assert report["provider"] == "anthropic" and report["applied"] == 2 * len(agents), report
    assert sorted(s.agent for s in seen) == sorted(agents * 2)
    assert all(s.status == 200 for s in seen)
    # the server's default answer knows no world: it fills id-like fields with ids the prompt lists,
    # so some calls are rejected; what applied is in the example's own collections
    applied, ops = check_run(repo, tmp_path, 2, len(agents), most=False)
    assert {d["meta"]["provider"] for d in applied} == {"anthropic"}
    assert len([d for d in applied if d["ops"]]) >= len(agents) // 2
    assert KEY not in p.stdout + p.stderr


# -- what the examples are ----------------------------------------------------

def test_every_example_is_listed_with_a_description_and_social_is_the_default() -> None:
    found = examples()
    assert set(EXAMPLES) <= set(found)
    assert [e.name for e in found.values() if e.default] == ["social"]
    for e in found.values():
        assert e.description and "\n" not in e.description
        names = [p.name for p in e.schemas]
        assert len(names) == len(set(names)) and "delta.schema.json" in names and "config.schema.json" in names


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_world_loads_with_no_problem(example: str) -> None:
    """Its tools and prompt pass fleet.world's checks against its own config and schemas."""
    from fleet import config, world

    e = examples()[example]
    files = {f"schemas/{p.name}": p.read_bytes() for p in e.schemas}
    files.update({f"state/{p.relative_to(e.state).as_posix()}": p.read_bytes() for p in e.state.rglob("*.json")})
    cfg = config.parse(files["state/config.json"])
    loaded, problems = world.check(cfg, files.get)
    assert problems == [] and loaded is not None
    for coll in cfg.collections.values():
        assert f"schemas/{coll.schema}" in files, coll.schema
    assert set(loaded.tools) >= {n for a in cfg.agents.values() for n in a.actions or ()}


def test_no_collection_of_an_example_is_named_in_fleets_python() -> None:
    """A world is configuration: fleet's code names none of the tickets world's
    collections (the social network's are checked where fleet's code is)."""
    cfg = json.loads((examples()["tickets"].state / "config.json").read_text())
    names = set(cfg["collections"])
    package = Path(__file__).resolve().parents[1] / "fleet"
    found = []
    for path in sorted(package.rglob("*.py")):
        if "_template" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                v = node.value
                if v in names or any(v.startswith(f"{n}/") for n in names):
                    found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {v!r}")
    assert found == []
