"""`fleet msg ...` as a user runs it, and the bus inside ticks: inboxes in prompts,
send_message and ack_message in deltas, delivered once by the merge, heartbeats
in fleet status; bad input gets one line and loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fleet import canonical
from fleet.tick_messages import message_id
from tests.conftest import Fleet, fleet_cli, run


def _json(f: Fleet, *args: str, code: int = 0) -> Any:
    r = run(f, "msg", *args, "--json", code=code)
    return json.loads(r.output.strip().splitlines()[-1] if code else r.output)


def test_send_inbox_ack_archive_say_what_they_read_and_pushed(fleet: Fleet) -> None:
    sent = _json(fleet, "send", "--from", "ada", "--to", "basil", "--type", "state", "--body", "on it")
    (m,) = sent["messages"]
    assert (m["from"], m["to"], m["type"], m["body"]) == ("ada", "basil", "state", "on it")
    assert sent["pushed"] == fleet.git.rev_parse(f"refs/heads/{sent['branch']}") and sent["read"] is None
    box = _json(fleet, "inbox", "basil")
    assert [x["id"] for x in box["messages"]] == [m["id"]]
    assert box["read"] == {sent["branch"]: sent["pushed"]}
    text = run(fleet, "msg", "inbox", "basil").output
    assert f"read {sent['branch']} {sent['pushed'][:12]}" in text and "ada -> basil (state): on it" in text
    acked = _json(fleet, "ack", "basil", m["id"])
    assert acked["acked"] == [m["id"]] and acked["pushed"] and acked["read"][sent["branch"]] == sent["pushed"]
    assert _json(fleet, "ack", "basil", m["id"])["already"] == [m["id"]]
    assert _json(fleet, "inbox", "basil")["messages"] == []
    (archived,) = _json(fleet, "archive", "basil")["messages"]
    assert archived["id"] == m["id"] and archived["acked_at"] >= archived["ts"]
    # the bus never writes main
    assert fleet.git.text("rev-list", "--count", "refs/heads/main") == "1"


@pytest.mark.parametrize("args, rule", [
    (["send", "--from", "ada", "--to", "nobody", "--body", "x"], "unknown agent 'nobody'"),
    (["send", "--from", "ada", "--to", "basil", "--type", "gossip", "--body", "x"], "unknown message type 'gossip'"),
    (["send", "--from", "ada", "--to", "basil", "--body", "é" * 8193], "over bus.max_body_bytes (16384)"),
    (["send", "--from", "../x", "--to", "basil", "--body", "x"], "--from '../x'"),
    (["send", "--from", "ada", "--to", "basil", "--body", "x", "--id", "a/b"], "message id 'a/b'"),
    (["send", "--from", "ada", "--to", "basil", "--body", "x", "--lane", "a b"], "bus lane 'a b'"),
    (["inbox", "nobody"], "unknown agent 'nobody'"),
    (["ack", "basil", "m-nope"], "no message 'm-nope' in basil's inbox"),
    (["heartbeat", "x y"], "heartbeat name 'x y'"),
])
def test_bad_input_is_one_line_exit_1_and_loses_nothing(fleet: Fleet, args: list[str], rule: str) -> None:
    kept = _json(fleet, "send", "--from", "ada", "--to", "basil", "--body", "kept")["messages"][0]["id"]
    r = run(fleet, "msg", *args, code=1)
    (line,) = [ln for ln in r.output.splitlines() if ln.startswith("fleet:")]
    assert rule in line, r.output
    assert [m["id"] for m in _json(fleet, "inbox", "basil")["messages"]] == [kept]


def test_usage_errors_exit_2(fleet: Fleet) -> None:
    assert "name the messages to ack" in run(fleet, "msg", "ack", "basil", code=2).output
    assert "not both" in run(fleet, "msg", "ack", "basil", "x", "--all", code=2).output


def test_heartbeats_show_in_status_alive_late_silent(fleet: Fleet) -> None:
    cfg_path = fleet.path / "state" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["bus"] = {"late_seconds": 3600, "silent_seconds": 7200}
    cfg_path.write_bytes(canonical.dumps(cfg))
    fleet.git.run("-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "bus thresholds")
    run(fleet, "msg", "heartbeat", "laptop-1", "--kind", "machine", "--note", "up")
    # one heartbeat written an hour and a half ago by another lane: late
    old = {"name": "box-2", "kind": "machine", "ts": "2000-01-01T00:00:00.000000Z"}
    commit = fleet.git.write_commit(None, "old\n", {"beat/box-2.json": canonical.dumps(old)}, [])
    fleet.git.update_ref("refs/heads/fleet-bus/out/far", commit, None)
    s = json.loads(run(fleet, "status", "--json").output)
    who = {w["name"]: w for w in s["heartbeats"]["who"]}
    assert who["laptop-1"]["status"] == "alive" and who["laptop-1"]["kind"] == "machine"
    assert who["box-2"]["status"] == "silent" and who["box-2"]["last_seen"] == old["ts"]
    assert who["ada"]["status"] == "silent" and who["ada"]["last_seen"] is None  # an agent never seen
    assert "laptop-1 alive (last seen" in run(fleet, "status").output


# -- inside ticks ------------------------------------------------------------------------

def _bus_fleet(tmp_path: Path, bus: dict[str, Any] | None = None) -> Path:
    """A fleet whose agents all have the bus's tools beside their own, on a bare origin."""
    fleet_cli(tmp_path, "init", "f")
    repo = tmp_path / "f"
    cfg = json.loads((repo / "state/config.json").read_bytes())
    tools = sorted(json.loads((repo / "state/tools.json").read_bytes()))
    for a in cfg["agents"].values():
        a["actions"] = tools + ["send_message", "ack_message"]
    if bus is not None:
        cfg["bus"] = bus
    (repo / "state/config.json").write_bytes(canonical.dumps(cfg))
    _git(repo, "commit", "-qam", "agents on the bus")
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(origin)], check=True)
    _git(repo, "config", "fleet.remote", origin.as_uri())
    return repo


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def _ledger_messages(origin: Path) -> dict[str, dict[str, Any]]:
    """Every message the applied deltas on main carry, by the id the merge gives it."""
    files = _git(origin, "ls-tree", "-r", "--name-only", "main", "state/ledger/").split()
    out = {}
    for f in files:
        for line in _git(origin, "show", f"main:{f}").splitlines():
            d = json.loads(line)
            for n, m in enumerate(d["meta"].get("messages") or []):
                out[message_id(d["id"], n)] = {**m, "from": d["agent"], "ts": d["utc"]}
    return out


def _all_messages(repo: Path) -> Counter[str]:
    """Each message id as often as it is found in every inbox and archive."""
    seen: Counter[str] = Counter()
    for agent in ("ada", "basil", "cleo", "dara", "eli", "fen"):
        for what in ("inbox", "archive"):
            p = fleet_cli(repo, "msg", what, agent, "--json")
            assert p.returncode == 0, p.stderr
            seen.update(m["id"] for m in json.loads(p.stdout)["messages"])
    return seen


def test_agents_read_their_inbox_and_send_in_ticks_delivered_exactly_once(tmp_path: Path) -> None:
    repo = _bus_fleet(tmp_path)
    p = fleet_cli(repo, "msg", "send", "--from", "person", "--to", "ada", "--body", "hello ada", "--json")
    hello = json.loads(p.stdout)["messages"][0]["id"]
    p = fleet_cli(repo, "run", "--ticks", "3", "--provider", "offline")
    assert p.returncode == 0, p.stderr
    sent = _ledger_messages(tmp_path / "origin.git")
    assert sent  # the offline agents sent notes through the tool, and the deltas carry them
    seen = _all_messages(repo)
    # every message of every applied delta is in exactly one inbox or archive, once; nothing else is
    assert {i: n for i, n in seen.items() if i.startswith("d-")} == dict.fromkeys(sent, 1)
    assert seen[hello] == 1
    # ada was shown the person's note in tick 1 and acked it through the tool: the merge archived it
    (archived,) = [m for m in json.loads(fleet_cli(repo, "msg", "archive", "ada", "--json").stdout)["messages"]
                   if m["id"] == hello]
    assert archived["body"] == "hello ada"
    acks = _git(tmp_path / "origin.git", "log", "-p", "main", "--", "state/ledger/")
    assert f'"acks":["{hello}"]' in acks.replace(" ", "")
    # every agent and worker that delivered has a heartbeat, posted by the merge
    s = json.loads(fleet_cli(repo, "status", "--json").stdout)
    who = {w["name"]: w for w in s["heartbeats"]["who"]}
    assert {"ada", "basil", "cleo", "dara", "eli", "fen", "w1", "w2"} <= {n for n, w in who.items() if w["status"] == "alive"}
    assert who["w1"]["kind"] == "worker" and who["ada"]["kind"] == "agent" and who["ada"]["tick"] == 3


def test_a_merge_run_again_after_delivering_does_not_deliver_twice(tmp_path: Path) -> None:
    repo = _bus_fleet(tmp_path)
    assert fleet_cli(repo, "work", "--worker", "1", "--workers", "1", "--provider", "offline").returncode == 0
    env = {**os.environ, "FLEET_CRASH_AT": "merge.before-commit"}
    crashed = subprocess.run([sys.executable, "-m", "fleet", "merge"], cwd=repo, capture_output=True, env=env)
    assert crashed.returncode != 0  # killed after the delivery, before main moved
    delivered = _all_messages(repo)
    assert delivered and set(delivered.values()) == {1}
    p = fleet_cli(repo, "merge", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)["messages"]
    assert report["delivered"] == 0 and report["already"] == len(delivered) and report["error"] is None
    assert _all_messages(repo) == delivered
    assert set(_ledger_messages(tmp_path / "origin.git")) == set(delivered)


def test_a_bus_that_cannot_be_reached_costs_the_delivery_never_the_tick(tmp_path: Path) -> None:
    repo = _bus_fleet(tmp_path, bus={"remote": str(tmp_path / "gone.git")})
    w = fleet_cli(repo, "work", "--worker", "1", "--workers", "1", "--provider", "offline")
    assert w.returncode == 0, w.stderr
    assert "warning: the message bus could not be read" in w.stdout and "gone.git" in w.stdout
    p = fleet_cli(repo, "merge", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["published"] and r["applied"] == 6 and "gone.git" in r["messages"]["error"]
    subject = _git(tmp_path / "origin.git", "log", "-1", "--format=%B", "main")
    assert "Messages not delivered:" in subject
    # the messages are not lost: the deltas in the ledger carry them
    assert _ledger_messages(tmp_path / "origin.git")
    s = fleet_cli(repo, "status")
    assert s.returncode == 0 and "heartbeats: the message bus cannot be read" in s.stdout
    again = fleet_cli(repo, "msg", "deliver")
    assert again.returncode == 1 and "tick 1: messages not delivered" in again.stderr
    # the bus is back (a repository at that path now): the ledger's messages are delivered, once
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "gone.git")], check=True)
    for _ in range(2):
        p = fleet_cli(repo, "msg", "deliver", "--tick", "1", "--json")
        assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["delivered"] == 0 and r["already"] == len(_ledger_messages(tmp_path / "origin.git"))
    assert dict(_all_messages(repo)) == dict.fromkeys(_ledger_messages(tmp_path / "origin.git"), 1)


def test_two_clones_talk_as_a_new_user_tries_it(tmp_path: Path) -> None:
    """fleet init, a bare origin, two clones: one sends, the other reads and acks, the first sees the archive."""
    fleet_cli(tmp_path, "init", "f")
    subprocess.run(["git", "clone", "-q", "--bare", str(tmp_path / "f"), str(tmp_path / "origin.git")], check=True)
    for name in ("laptop", "desktop"):
        subprocess.run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(tmp_path / name)], check=True)
    laptop, desktop = tmp_path / "laptop", tmp_path / "desktop"
    p = fleet_cli(laptop, "msg", "send", "--from", "me", "--to", "cleo", "--body", "deploy at noon")
    assert p.returncode == 0 and "pushed fleet-bus/out/" in p.stdout, p.stderr
    p = fleet_cli(desktop, "msg", "inbox", "cleo", "--json")
    (m,) = json.loads(p.stdout)["messages"]
    assert (m["from"], m["body"]) == ("me", "deploy at noon")
    assert fleet_cli(desktop, "msg", "ack", "cleo", m["id"]).returncode == 0
    p = fleet_cli(laptop, "msg", "archive", "cleo")
    assert p.returncode == 0 and m["id"] in p.stdout and "deploy at noon" in p.stdout
    assert "0 message(s) in the inbox" in fleet_cli(laptop, "msg", "inbox", "cleo").stdout
    # each clone has a lane of its own, kept in its own git config (never pushed)
    lanes = [subprocess.run(["git", "config", "fleet.buslane"], cwd=c, capture_output=True, text=True).stdout.strip()
             for c in (laptop, desktop)]
    assert lanes[0] and lanes[1] == ""  # the desktop only read and acked: it never needed an outbox


def test_inbox_and_archive_mark_a_body_longer_than_its_first_line(fleet: Fleet) -> None:
    """Only the first line is listed; the rest was hidden with no sign of it."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from fleet.commands.msg import _show

    line = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\n\r"), max_size=20)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(line, min_size=1, max_size=6))
    def check(lines: list[str]) -> None:
        body = "\n".join(lines)
        shown = _show({"id": "m-1", "ts": "t", "from": "ada", "to": "basil", "type": "note", "body": body})
        assert "\n" not in shown and "\r" not in shown
        hidden = len(body.splitlines()) - 1
        if hidden > 0:
            assert shown.endswith(f" … (+{hidden} line{'s' if hidden != 1 else ''}, --json for all)"), shown
        else:
            assert "--json for all" not in shown

    check()
    body = "first line\nsecond\nthird"
    (m,) = _json(fleet, "send", "--from", "ada", "--to", "basil", "--body", body)["messages"]
    text = run(fleet, "msg", "inbox", "basil").output
    assert "ada -> basil (note): first line … (+2 lines, --json for all)" in text
    assert _json(fleet, "inbox", "basil")["messages"][0]["body"] == body
    _json(fleet, "ack", "basil", m["id"])
    assert "first line … (+2 lines, --json for all)" in run(fleet, "msg", "archive", "basil").output


@pytest.mark.parametrize("args, flag", [
    (["send", "--from", "ada", "--to", "basil", "--body", "the key: sk-ant-test-SECRET123\nok?"], "message body"),
    (["heartbeat", "laptop-1", "--note", "using sk-ant-test-SECRET123"], "--note"),
])
def test_a_persons_text_holding_a_key_is_refused_not_stored_masked(fleet: Fleet, monkeypatch: pytest.MonkeyPatch,
                                                                   args: list[str], flag: str) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-SECRET123")
    before = fleet.git.text("for-each-ref", "refs/heads/")
    r = run(fleet, "msg", *args, code=1)
    [line] = r.output.strip().splitlines()
    assert line.startswith(f"fleet: {flag}: holds the value of ANTHROPIC_API_KEY") and "SECRET123" not in line
    assert fleet.git.text("for-each-ref", "refs/heads/") == before  # nothing written
