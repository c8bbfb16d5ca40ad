"""`fleet msg send / inbox / ack / archive / heartbeat`: the message bus (fleet.bus).

Reads fetch first (main for the config, then every bus branch) and say which
commits they read; writes push at once and say what they pushed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fleet import keys
from fleet.bus import KINDS, MAX_FILE_BYTES, MAX_NOTE, Bus
from fleet.cli import MAX_COUNT, dir_option, emit, group_dir_option, json_option, read_stdin, remote_option
from fleet.errors import FleetError, UsageError
from fleet.ids import printable
from fleet.repo import FleetRepo


def send(path: Path, sender: str, to: str, mtype: str, body: str, *, remote: str | None = None,
         lane: str | None = None, msg_id: str | None = None) -> dict[str, Any]:
    return Bus(FleetRepo(path, remote)).send(sender, to, mtype, body, lane=lane, msg_id=msg_id).to_json()


def inbox(path: Path, agent: str, *, remote: str | None = None) -> dict[str, Any]:
    bus = Bus(FleetRepo(path, remote))
    bus.fetch()
    _known(bus, agent)
    return bus.inbox(agent, fetch=False).to_json()


def ack(path: Path, agent: str, ids: list[str] | None, *, remote: str | None = None) -> dict[str, Any]:
    return Bus(FleetRepo(path, remote)).ack(agent, ids).to_json()


def archive(path: Path, agent: str, *, remote: str | None = None) -> dict[str, Any]:
    bus = Bus(FleetRepo(path, remote))
    bus.fetch_main()
    _known(bus, agent)
    msgs, tip, bad = bus.archive(agent)
    return {"agent": agent, "messages": [m.to_json() for m in msgs], "quarantined": [q.to_json() for q in bad],
            "read": {bus.box(agent): tip}, "remote": bus.remote}


def heartbeat(path: Path, name: str, kind: str, *, remote: str | None = None, tick: int | None = None,
              note: str | None = None, lane: str | None = None) -> dict[str, Any]:
    if note:
        if len(note) > MAX_NOTE:  # kept whole or not at all: a note cut short says something else
            raise UsageError(f"--note: at most {MAX_NOTE} characters ({len(note):,} given)")
        keys.refuse(note, "--note")  # a person's note with a key would be stored masked
    sent = Bus(FleetRepo(path, remote)).beat(name, kind, tick=tick, note=note, lane=lane)
    return {"name": name, "kind": kind, "branch": sent.branch, "pushed": sent.commit, "read": sent.read,
            "remote": sent.remote}


def _known(bus: Bus, agent: str) -> None:
    if agent not in bus.cfg.agents:
        raise FleetError(f"unknown agent '{printable(agent, 80)}': not among the agents of state/config.json "
                         f"({', '.join(sorted(bus.cfg.agents)[:20]) or 'none'})")


def _where(remote: str | None) -> str:
    return remote or "this repository"


def _read_line(read: dict[str, str | None]) -> str:
    tips = [f"{b} {c[:12]}" for b, c in sorted(read.items()) if c]
    return "read " + (", ".join(tips) if tips else "nothing (no bus branch yet)")


def _show(m: dict[str, Any]) -> str:
    """One line per message: its first line, and a marker when more of the body is hidden."""
    lines = m["body"].splitlines()
    first = printable(lines[0] if lines else "", 120)
    hidden = len(lines) - 1
    more = f" … (+{hidden} line{'s' if hidden != 1 else ''}, --json for all)" if hidden > 0 else ""
    acked = f", acked {m['acked_at']}" if m.get("acked_at") else ""
    return f"  {m['id']}  {m['ts']}  {m['from']} -> {m['to']} ({m['type']}{acked}): {first}{more}"


# -- the command line --------------------------------------------------------
@click.group("msg")
@group_dir_option
def msg_command(directory: Path | None) -> None:
    """The message bus: per-agent inboxes and archives, and heartbeats, on the bus's branches.

    Reads fetch first and say which commits they read; writes push at once and say what they pushed.
    """


_lane_option = click.option("--lane", default=None, metavar="NAME",
                            help="This sender's outbox (default: $FLEET_BUS_LANE, else this clone's own, "
                                 "git config fleet.buslane).")


@msg_command.command("send")
@dir_option
@json_option
@remote_option
@click.option("--from", "sender", required=True, help="Who sends it: an agent, a worker, a machine or a person.")
@click.option("--to", "to", required=True, help="The agent whose inbox it goes to.")
@click.option("--type", "mtype", default="note", show_default=True,
              help="note, ack, heartbeat, state, or a type of config's bus.types.")
@click.option("--body", required=True, help="The text ('-': read it from standard input).")
@click.option("--id", "msg_id", default=None,
              help="The message's id, to send it again safely (the same id with the same content is sent once).")
@_lane_option
def msg_send_cmd(directory: Path, as_json: bool, remote: str | None, sender: str, to: str, mtype: str, body: str,
                 msg_id: str | None, lane: str | None) -> None:
    """Send a message to an agent's inbox: one file, one push."""
    if body == "-":
        body = read_stdin(MAX_FILE_BYTES, "a message body")  # bus.max_body_bytes is checked at send
    r = send(directory, sender, to, mtype, body, remote=remote, lane=lane, msg_id=msg_id)

    def text() -> None:
        for m in r["messages"]:
            click.echo(f"sent {m['id']} from {m['from']} to {m['to']} ({m['type']})")
        for i in r["already"]:
            click.echo(f"{i} was sent already with the same content: not sent again")
        pushed = f"pushed {r['branch']} {r['pushed'][:12]}" if r["pushed"] else "pushed nothing"
        click.echo(f"{pushed} to {_where(r['remote'])} (read {r['read'][:12] if r['read'] else 'a new outbox'})")

    emit(r, as_json, text)


@msg_command.command("inbox")
@dir_option
@json_option
@remote_option
@click.argument("agent")
def msg_inbox_cmd(directory: Path, as_json: bool, remote: str | None, agent: str) -> None:
    """The messages to AGENT that it has not acked, oldest first."""
    _emit_box(inbox(directory, agent, remote=remote), agent, "inbox", as_json)


@msg_command.command("ack")
@dir_option
@json_option
@remote_option
@click.argument("agent")
@click.argument("ids", nargs=-1)
@click.option("--all", "ack_all", is_flag=True, help="Ack every message in the inbox.")
def msg_ack_cmd(directory: Path, as_json: bool, remote: str | None, agent: str, ids: tuple[str, ...],
                ack_all: bool) -> None:
    """Move messages IDS of AGENT's inbox to its archive (one push for all)."""
    if not ids and not ack_all:
        raise click.UsageError("name the messages to ack (IDS), or give --all")
    if ids and ack_all:
        raise click.UsageError("give IDS or --all, not both")
    r = ack(directory, agent, None if ack_all else list(ids), remote=remote)

    def text() -> None:
        click.echo(f"{agent}: acked {len(r['acked'])} message(s)"
                   + (f", {len(r['already'])} acked already" if r["already"] else ""))
        pushed = f"pushed {r['branch']} {r['pushed'][:12]}" if r["pushed"] else "pushed nothing"
        click.echo(f"{pushed} to {_where(r['remote'])}; {_read_line(r['read'])}")

    emit(r, as_json, text)


@msg_command.command("archive")
@dir_option
@json_option
@remote_option
@click.argument("agent")
def msg_archive_cmd(directory: Path, as_json: bool, remote: str | None, agent: str) -> None:
    """The messages AGENT has acked, oldest ack first."""
    _emit_box(archive(directory, agent, remote=remote), agent, "archive", as_json)


def _emit_box(r: dict[str, Any], agent: str, box: str, as_json: bool) -> None:
    """An inbox or an archive: its messages, then what was quarantined on the way."""
    def text() -> None:
        click.echo(f"{agent}: {len(r['messages'])} message(s) in the {box}; {_read_line(r['read'])} "
                   f"from {_where(r['remote'])}")
        for m in r["messages"]:
            click.echo(_show(m))
        for q in r["quarantined"]:
            click.echo(f"  quarantined {q['where']}: {q['reason']}")

    emit(r, as_json, text)


@msg_command.command("deliver")
@dir_option
@json_option
@remote_option
@click.option("--tick", type=click.IntRange(1, MAX_COUNT), default=None, help="The merged tick (default: the last).")
def msg_deliver_cmd(directory: Path, as_json: bool, remote: str | None, tick: int | None) -> None:
    """Deliver the messages of a merged tick again, from the ledger (after a merge that could not reach the bus).

    Safe to repeat: a message delivered already is not delivered twice."""
    from fleet import tick_messages

    found, d = tick_messages.redeliver(FleetRepo(directory, remote), tick)
    r = {"tick": found, **(d.to_json() if d else {"delivered": 0, "already": 0, "refused": [], "acked": 0,
                                                  "heartbeats": 0, "pushed": None, "error": None})}
    if r["error"]:
        raise FleetError(f"tick {found}: messages not delivered: {r['error']}")

    def text() -> None:
        click.echo(f"tick {found}: {r['delivered']} message(s) delivered, {r['already']} delivered already, "
                   f"{len(r['refused'])} refused, {r['acked']} acked"
                   + (f"; pushed {r['pushed'][:12]}" if r["pushed"] else "; pushed nothing"))
        for x in r["refused"]:
            click.echo(f"  refused {x['id']} from {x['from']} to {x['to']}: {x['why']}")

    emit(r, as_json, text)


@msg_command.command("heartbeat")
@dir_option
@json_option
@remote_option
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), default="machine", show_default=True,
              help="What NAME is.")
@click.option("--tick", type=click.IntRange(0, MAX_COUNT), default=None, help="The tick it is posted for.")
@click.option("--note", default=None, help=f"A short note (at most {MAX_NOTE} characters).")
@_lane_option
def msg_heartbeat_cmd(directory: Path, as_json: bool, remote: str | None, name: str, kind: str, tick: int | None,
                      note: str | None, lane: str | None) -> None:
    """Post a heartbeat of NAME; fleet status shows who is alive, late or silent."""
    r = heartbeat(directory, name, kind, remote=remote, tick=tick, note=note, lane=lane)

    def text() -> None:
        click.echo(f"heartbeat of {name} ({kind}): pushed {r['branch']} {r['pushed'][:12] if r['pushed'] else '-'} "
                   f"to {_where(r['remote'])}")

    emit(r, as_json, text)



