"""Messages inside ticks: agents read their inbox in their prompt and send through a tool.

An agent whose ``actions`` name ``send_message`` or ``ack_message`` takes part
in the bus (fleet.bus). The worker, which holds no credential that can write,
reads the inboxes of its agents (a fetch: reading needs none), shows each
agent its unacked messages, and turns a ``send_message`` call into an entry of
the delta's ``meta.messages`` ({to, type, body}) and an ``ack_message`` call
into one of ``meta.acks`` (a message id from the inbox it was shown). The
merge job, the only writer, delivers them for the deltas it applied: each
message gets an id derived from its delta and its place there, and the
delta's time, so a merge that runs again (after a crash, or a lost race)
delivers it once. It also records the heartbeat of every agent and worker whose
delta it applied, once the fleet uses the bus (``in_use``). A message the bus refuses (an agent that left the config)
is named in the tick's commit; a bus that cannot be reached costs the
delivery, never the tick: the deltas, messages included, stay in the ledger.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.config import Config
from fleet.errors import FleetError
from fleet.ids import ID_PATTERN, printable

if TYPE_CHECKING:
    from fleet.delta import Delta
    from fleet.repo import FleetRepo

TYPES = ("note", "ack", "heartbeat", "state")  # fleet's own message types; config's bus.types adds more
SEND = "send_message"
ACK = "ack_message"
TOOLS = (SEND, ACK)
MAX_SENT = 16  # messages in one delta (delta.schema.json meta.messages)
MAX_ACKS = 64
SHOWN = 20  # messages of an inbox a prompt shows at most
SHOWN_BODY = 1000  # characters of each body a prompt shows
_ID = {"type": "string", "pattern": ID_PATTERN}
DEFINITIONS: dict[str, dict[str, Any]] = {
    SEND: {"name": SEND, "description": "Send a message to another agent's inbox; it reads it in its next turn.",
           "input_schema": {"type": "object", "additionalProperties": False, "required": ["to", "body"],
                            "properties": {"to": {**_ID, "description": "The agent it is for."},
                                           "type": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$",
                                                    "default": "note", "description": "note, state, ..."},
                                           "body": {"type": "string", "minLength": 1, "maxLength": 4000}}}},
    ACK: {"name": ACK, "description": "Mark a message of your inbox as dealt with; it moves to your archive.",
          "input_schema": {"type": "object", "additionalProperties": False, "required": ["id"],
                           "properties": {"id": {**_ID, "description": "The message's id, as your inbox shows it."}}}},
}


def message_tools(cfg: Config, agent: str) -> tuple[str, ...]:
    """The message tools ``agent`` has: those its ``actions`` name."""
    a = cfg.agents.get(agent)
    if a is None or a.actions is None:
        return ()
    return tuple(t for t in TOOLS if t in a.actions)


def message_types(cfg: Config) -> tuple[str, ...]:
    """fleet's own types, then those config's bus.types adds."""
    return TYPES + tuple(t for t in cfg.bus.types if t not in TYPES)


def in_use(cfg: Config) -> bool:
    """Whether the fleet uses the bus: an agent has a message tool, or config has a ``bus`` key."""
    from fleet.config import BusSettings

    return cfg.bus != BusSettings() or any(message_tools(cfg, a) for a in cfg.agents)


def message_agents(cfg: Config, agents: list[str]) -> list[str]:
    return [a for a in agents if message_tools(cfg, a)]


# -- in the worker ----------------------------------------------------------------------
def call(cfg: Config, agent: str, name: str, given: dict[str, Any], inbox_ids: set[str]) -> tuple[str, Any]:
    """What a checked call of a message tool adds to the delta: ("messages", {to, type, body})
    or ("acks", id); ValueError says why it cannot."""
    if name == SEND:
        to, mtype, body = given["to"], given.get("type", "note"), given["body"]
        if to not in cfg.agents:
            raise ValueError(f"no agent '{printable(to, 80)}' (agents: {', '.join(sorted(cfg.agents)[:20])})")
        types = message_types(cfg)
        if mtype not in types:
            raise ValueError(f"unknown message type '{printable(mtype, 40)}' (types: {', '.join(types)})")
        if len(body.encode("utf-8", errors="surrogatepass")) > cfg.bus.max_body_bytes:
            raise ValueError(f"body over bus.max_body_bytes ({cfg.bus.max_body_bytes})")
        return "messages", {"to": to, "type": mtype, "body": body}
    if given["id"] not in inbox_ids:
        raise ValueError(f"no message '{printable(given['id'], 80)}' in your inbox")
    return "acks", given["id"]


def inbox_text(inbox: list[dict[str, Any]], room: int, cost: Any) -> str:
    """The inbox as a prompt shows it, within ``room`` tokens (``cost`` counts them):
    the oldest messages first, each body cut at SHOWN_BODY characters."""
    if not inbox:
        return ""
    head = f"Your inbox ({len(inbox)} message(s); call ack_message with an id once you have dealt with one):"
    text, used = head, cost(head)
    for m in inbox[:SHOWN]:
        # one line each, control characters shown escaped: a body cannot pass for the prompt's own text
        body = printable(str(m["body"]), SHOWN_BODY)
        line = f"\n- {m['id']} from {m['from']} ({m['type']}, {m['ts']}): {body}"
        if used + cost(line) > room:
            break
        text += line
        used += cost(line)
    return text if text != head else ""


def read_inboxes(repo: FleetRepo, cfg: Config, agents: list[str]) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """The unacked messages of each of ``agents`` that has message tools (a shallow fetch of
    the bus: this job only reads it), and the bus's error if it cannot be read (the tick goes on)."""
    wanted = message_agents(cfg, agents)
    if not wanted:
        return {}, None
    from fleet.bus import Bus

    try:
        bus = Bus(repo, cfg)
        bus.fetch(main=False, shallow=True)
        boxes = bus.inboxes(wanted, fetch=False)
    except FleetError as e:
        return {}, printable(str(e), 300)
    return {a: [m.to_json() for m in boxes[a].messages] for a in wanted}, None


# -- at the merge -------------------------------------------------------------------------
def message_id(delta_id: str, n: int) -> str:
    """The id of the ``n``-th message of a delta: the same at every merge of that delta."""
    return "d-" + hashlib.sha256(f"{delta_id}\0{n}".encode()).hexdigest()[:32]


@dataclass
class Delivery:
    delivered: list[str] = field(default_factory=list)  # message ids written now
    already: list[str] = field(default_factory=list)  # delivered by an earlier run of this merge
    refused: list[dict[str, Any]] = field(default_factory=list)  # {id, from, to, why}
    acked: list[str] = field(default_factory=list)
    heartbeats: int = 0
    pushed: str | None = None
    error: str | None = None  # the bus could not be written: nothing delivered, the tick goes on

    def to_json(self) -> dict[str, Any]:
        return {"delivered": len(self.delivered), "already": len(self.already), "refused": self.refused,
                "acked": len(self.acked), "heartbeats": self.heartbeats, "pushed": self.pushed, "error": self.error}

    def lines(self) -> list[str]:
        """For the tick's commit message."""
        out = [f"Message refused: {r['from']} to {r['to']} ({r['id']}): {r['why']}" for r in self.refused]
        if self.error:
            out.append(f"Messages not delivered: {self.error}")
        return out


def deliver(repo: FleetRepo, cfg: Config, tick: int, applied: list[Delta]) -> Delivery | None:
    """Deliver the messages and acks of the tick's applied deltas, and post the
    heartbeats of their agents and workers, on the merge's lane of the bus."""
    from fleet.bus import MERGE_LANE, Bus, stamp
    from fleet.store import now

    items: list[dict[str, Any]] = []
    acks: dict[str, list[str]] = {}
    beats: dict[str, dict[str, Any]] = {}
    latest = stamp(now())  # a worker's clock says when its turns ended, never that it is alive in the future
    for d in applied:
        for n, m in enumerate(d.meta.get("messages") or []):
            items.append({"id": message_id(d.id, n), "ts": d.utc, "from": d.agent, "to": m["to"],
                          "type": m.get("type", "note"), "body": m["body"]})
        for mid in d.meta.get("acks") or []:
            acks.setdefault(d.agent, []).append(mid)
        for name, kind in ((d.agent, "agent"), (d.worker, "worker")):
            seen = min(d.utc, latest)
            if name not in beats or seen > beats[name]["ts"]:
                beats[name] = {"name": name, "kind": kind, "ts": seen, "tick": tick}
    if not items and not acks and not in_use(cfg):
        return None  # a fleet that does not use the bus gets no heartbeat push either
    out = Delivery()
    try:
        bus = Bus(repo, cfg)
        refused: list[dict[str, Any]] = []
        sent = bus.post(items, list(beats.values()), lane=MERGE_LANE, skip_refused=refused)
        out.delivered = [m["id"] for m in sent.messages]
        out.already = sent.already
        out.refused = [{"id": r["item"]["id"], "from": r["item"]["from"], "to": printable(str(r["item"]["to"]), 80),
                        "why": printable(r["why"], 300)} for r in refused]
        out.heartbeats = len(beats)
        out.pushed = sent.commit
        if acks:
            bus.fetch()
            for agent, ids in sorted(acks.items()):
                done = bus.ack(agent, ids, fetch=False, missing_ok=True)
                out.acked += done.acked
    except FleetError as e:
        out.error = printable(str(e), 300)
    return out


def redeliver(repo: FleetRepo, tick: int | None = None) -> tuple[int, Delivery | None]:
    """Deliver again the messages of a merged tick (default: the last), read from the
    ledger on main: for a tick whose merge could not reach the bus. Safe to repeat:
    what was delivered already is not delivered twice."""
    from fleet.ledger import tick_inputs, tick_of

    repo.fetch()
    head = repo.main()
    cfg = repo.config(head)
    for commit, parent, text in reversed(repo.git.first_parent_log(head)):
        found = tick_of(text)
        if found is None or parent is None or (tick is not None and found != tick):
            continue
        applied = tick_inputs(repo.git, parent, commit, cfg.limits).applied
        return found, deliver(repo, cfg, found, applied)
    raise FleetError(f"no merged tick {tick} on main" if tick is not None else "no tick merged on main yet")
