"""The message bus: per-agent inboxes and archives, and heartbeats, on branches of git.

A message is one JSON file {id, ts, from, to, type, body}
(schemas/message.schema.json). Sends never contend with each other: each
sender lane (a clone, a machine, the merge job) appends to an outbox branch
of its own, ``<bus.branch>/out/<lane>``, as ``to/<agent>/<id>.json``, with a
compare-and-swap push that only another process of the same lane can race.
An agent's inbox is the union of the files addressed to it across all
outboxes, less what its archive holds. Its archive is a branch of its own,
``<bus.branch>/box/<agent>``, that only acks change (``archive/<id>.json``,
the message with ``acked_at``), again by compare-and-swap, so an ack is moved
into the archive exactly once however many readers ack at once. The last
heartbeat of each worker, agent or machine is ``beat/<name>.json`` in the
outbox of the lane that posted it.

Both kinds of branch are record stores (fleet.store.BranchStore). The bus can
live in another repository (``bus.remote``); its branches are the only thing
sent there, commits made from the records alone, so runtime state (sessions,
caches, credentials, ``.git/fleet/``) never leaves the machine. Reads fetch
first and writes push at once, and every result says which commits were read
and which was pushed.

Message ids are unique per sender (``m-<utc>-<random>``); a message an agent
sends in a tick gets an id derived from its delta, so the merge delivers it
once however often it runs. An id that comes back with other content is
refused at send; where an inbox is read, every copy of a reused id is
quarantined (reported, not delivered, left in place: git cannot tell which is
genuine), as is any file that is not a valid message.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import canonical, keys, schemas
from fleet.config import Config
from fleet.errors import FleetError
from fleet.git import git_reason
from fleet.ids import NAME_RULE, device_name, is_safe_id, printable, utf8
from fleet.repo import TRACKING, FleetRepo, fetch_failed
from fleet.store import BranchStore, Change, Kind, Records, now
from fleet.tick_messages import message_types

KINDS = ("worker", "agent", "machine")  # who sends heartbeats
MAX_NOTE = 500  # characters of a heartbeat's note
MSG_DIR = "to"
ARCHIVE_DIR = "archive"
BEAT_DIR = "beat"
LANE_ENV = "FLEET_BUS_LANE"
LANE_CONFIG = "fleet.buslane"  # the clone's own lane, in .git/config: never synced
MERGE_LANE = "merge"  # the lane the merge job delivers agents' messages and heartbeats on
OTHER_TRACKING = "refs/fleet/bus-remote/"  # where a bus in another repository is tracked
_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_FILE_BYTES = 2 * 1048576 + 4096  # a file bigger than any valid message is not read


LINK = "is a symbolic link; a bus file is a regular file (git mode 100644)"
GITLINK = "is a submodule (git mode 160000); a bus file is a regular file (git mode 100644)"
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# How far ahead of this clock a heartbeat may be (clocks differ a little): one
# from further ahead would keep its name alive until then, so it is quarantined.
MAX_AHEAD = 300


def stamp(when: _dt.datetime) -> str:
    """UTC with microseconds, as a delta's utc: 2026-12-01T22:29:00.123456Z."""
    return when.astimezone(_dt.UTC).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> _dt.datetime:
    """A stamp as a time; FleetError if it is none. A file on a lane is anyone's
    bytes: the schema's pattern lets 2026-02-30 and 9999-99-99 through."""
    try:
        return _dt.datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=_dt.UTC)
    except (TypeError, ValueError):
        raise FleetError(f"'{printable(str(text), 40)}' is not a UTC time such as 2026-12-01T22:29:00.123456Z") from None


def stamp_problem(doc: dict[str, Any], keys_: tuple[str, ...] = ("ts", "acked_at")) -> str | None:
    """Why a stamp of a record that passed its schema is no real time, or None."""
    for key in keys_:
        if key in doc:
            try:
                parse_stamp(doc[key])
            except FleetError as e:
                return f"at /{key}: {e}"
    return None


def new_id(when: _dt.datetime) -> str:
    """A sender-unique id: the time and 64 random bits."""
    return f"m-{when.astimezone(_dt.UTC).strftime('%Y%m%dT%H%M%S%f')}-{secrets.token_hex(8)}"


def message_path(to: str, msg_id: str) -> str:
    return f"{MSG_DIR}/{to}/{msg_id}.json"


def archive_path(msg_id: str) -> str:
    return f"{ARCHIVE_DIR}/{msg_id}.json"


def beat_path(name: str) -> str:
    return f"{BEAT_DIR}/{name}.json"


# -- records ---------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """One message as read (schemas/message.schema.json); ``acked_at`` only in an archive."""

    id: str
    ts: str
    from_: str
    to: str
    type: str
    body: str
    acked_at: str | None = None
    where: str = ""  # <branch>:<path> it was read from

    @classmethod
    def parse(cls, doc: dict[str, Any], where: str = "") -> Message:
        return cls(doc["id"], doc["ts"], doc["from"], doc["to"], doc["type"], doc["body"], doc.get("acked_at"), where)

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "ts": self.ts, "from": self.from_, "to": self.to, "type": self.type, "body": self.body}
        if self.acked_at is not None:
            out["acked_at"] = self.acked_at
        return out

    def same(self, other: Message) -> bool:
        """The same message: what was sent, whenever and wherever it was read."""
        return (self.id, self.from_, self.to, self.type, self.body) == (other.id, other.from_, other.to, other.type,
                                                                        other.body)


def problem(doc: Any, where: str, schema: str = "message") -> str | None:
    """Why ``doc`` is not a valid record, as '<where>: <rule> (schemas/...)', or None."""
    found = schemas.first_error(schemas.protocol(schema), doc)
    if found is None:
        found = stamp_problem(doc)
    if found:
        return f"{where}: {found} (schemas/{schema}.schema.json)"
    if schema == "message" and not where.endswith(f"/{doc['id']}.json"):
        return f"{where}: the file's name must be its id ({doc['id']}.json)"
    return None


def _lenient(schema: str, name: str) -> Callable[[Any, str], dict[str, Any]]:
    """A store check that never raises: a bad file is kept as a record that says
    why, so one hostile file costs its own message, never the branch."""

    def check(doc: Any, where: str) -> dict[str, Any]:
        why = problem(doc, where, schema) if isinstance(doc, dict) else f"{where}: not a JSON object (schemas/{schema}.schema.json)"
        return {name: "", "problem": why} if why else dict(doc)

    return check


_OUT_KINDS = (Kind(MSG_DIR, "id", "message", _lenient("message", "id")),
              Kind(BEAT_DIR, "name", "heartbeat", _lenient("heartbeat", "name")))
_BOX_KINDS = (Kind(ARCHIVE_DIR, "id", "message", _lenient("message", "id")),)


@dataclass
class Quarantined:
    where: str  # <branch>:<path>
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


@dataclass
class Inbox:
    """What one read of an agent's inbox found, and at which commits."""

    agent: str
    messages: list[Message]
    quarantined: list[Quarantined]
    read: dict[str, str]  # branch -> commit read (every outbox, and the agent's box)
    remote: str | None

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "messages": [m.to_json() for m in self.messages],
                "quarantined": [q.to_json() for q in self.quarantined], "read": self.read, "remote": self.remote}


@dataclass
class Sent:
    """What one send (or delivery) pushed."""

    messages: list[dict[str, Any]]  # written now
    already: list[str] = field(default_factory=list)  # ids the lane had already, same content
    branch: str = ""
    commit: str | None = None  # pushed (None: nothing new)
    read: str | None = None  # the lane's commit the send was decided on
    remote: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "already": self.already, "branch": self.branch, "pushed": self.commit,
                "read": self.read, "remote": self.remote}


class _Unknown(FleetError):
    """A recipient the config on main does not name (main may be behind: fetch and look again)."""


# -- where the bus is -------------------------------------------------------
class _BusRepo(FleetRepo):
    """The fleet repository as a store on the bus sees it: main (for the config)
    where the fleet's is, branches pushed to and fetched from the bus's remote."""

    def __init__(self, fleet: FleetRepo, remote: str | None) -> None:  # no FleetRepo.__init__: nothing to find
        self.path = fleet.path
        self.git = fleet.git
        self.remote = remote
        self._fleet = fleet

    @property
    def main_ref(self) -> str:
        return self._fleet.main_ref

    def main(self) -> str:
        return self._fleet.main()


class _Branch(BranchStore):
    """One bus branch as a record store, tracked where the bus says."""

    def __init__(self, bus: Bus, branch: str, kinds: tuple[Kind, ...], cache: str) -> None:
        super().__init__(bus.store_repo, branch, kinds, what="message bus", cache=cache, fault="bus")
        self.bus = bus
        self.pushed: str | None = None

    @property
    def ref(self) -> str:
        return self.bus.tracking(self.branch)

    def fetch(self, main: bool = True) -> None:
        self.bus.fetch_branches([self.branch])

    push_first = False  # the bus may live on another remote than main: no lease on main in its pushes

    def publish(self, new: str, old: str | None, *, main: str | None = None) -> bool:
        won = super().publish(new, old)
        self.pushed = new if won else None  # what the caller reports, without asking git again
        return won


def lane_of(repo: FleetRepo, given: str | None = None) -> str:
    """This sender's lane: ``given``, else $FLEET_BUS_LANE, else the clone's own
    (git config fleet.buslane, made on first use from the host's name and 24
    random bits, so two clones on one machine never share an outbox)."""
    lane = given or os.environ.get(LANE_ENV) or None
    if lane is None:
        p = repo.git.proc("config", "--get", LANE_CONFIG)
        lane = p.stdout.decode().strip() if p.returncode == 0 else None
        if not lane:
            host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:32].strip(".-") or "host"
            lane = f"{host}-{secrets.token_hex(3)}"
            repo.git.proc("config", LANE_CONFIG, lane)
    if not is_safe_id(lane) or ".." in lane or device_name(lane):
        raise FleetError(f"bus lane '{printable(lane, 80)}': a lane is a name ({NAME_RULE}; not one Windows keeps "
                         f"for a device, such as CON; set by --lane, ${LANE_ENV} or git config {LANE_CONFIG})")
    return lane


def _remote_of(repo: FleetRepo, cfg: Config) -> str | None:
    """Where the bus lives: bus.remote (a name under remotes, a git remote of this
    clone, a URL or a path), else the fleet's own remote."""
    given = cfg.bus.remote
    if not given:
        return repo.remote
    named = getattr(cfg, "remotes", None)  # {"<name>": "<url or path>"} (config key remotes)
    if isinstance(named, dict) and isinstance(named.get(given), str):
        given = named[given]
    elif isinstance(named, dict) and isinstance(getattr(named.get(given), "url", None), str):
        given = named[given].url
    if repo.git.proc("config", "--get", f"remote.{given}.url").returncode == 0:
        return given
    if "://" in given or given.startswith("git@"):
        return given
    path = Path(given)
    return str(path if path.is_absolute() else (repo.path / path).resolve())


class Bus:
    """The bus of one fleet, seen from one clone."""

    def __init__(self, repo: FleetRepo, cfg: Config | None = None) -> None:
        self.repo = repo
        self.git = repo.git
        self._cfg = cfg
        self._remote: str | None | bool = False  # False: not resolved yet
        self._lane: str | None = None
        self._has_main = False

    # -- settings --------------------------------------------------------
    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = self.repo.config(self._main())
        return self._cfg

    def _main(self) -> str:
        if self.git.rev_parse(self.repo.main_ref) is None and self.repo.remote:
            self.fetch_main()
        return self.repo.main()

    @property
    def remote(self) -> str | None:
        if self._remote is False:
            self._remote = _remote_of(self.repo, self.cfg)
        assert self._remote is not True
        return self._remote

    @property
    def own(self) -> bool:
        """The bus is on the fleet's own remote (or in this repository, with none)."""
        return self.remote == self.repo.remote

    @property
    def store_repo(self) -> FleetRepo:
        return _BusRepo(self.repo, self.remote)

    @property
    def prefix(self) -> str:
        return self.cfg.bus.branch

    def outbox(self, lane: str) -> str:
        return f"{self.prefix}/out/{lane}"

    def box(self, agent: str) -> str:
        return f"{self.prefix}/box/{agent}"

    def tracking(self, branch: str) -> str:
        """Where this clone keeps ``branch`` of the bus as last fetched."""
        if not self.remote:
            return f"refs/heads/{branch}"
        return (TRACKING if self.own else OTHER_TRACKING) + branch

    # -- synchronising -----------------------------------------------------
    def fetch_main(self) -> None:
        if not self.repo.remote:
            return
        err = self.git.fetch_refs(self.repo.remote, f"+refs/heads/main:{TRACKING}main")
        if err is not None:
            raise fetch_failed(self.repo.remote, err)

    def fetch(self, main: bool = True, *, shallow: bool = False) -> None:
        """Fetch every bus branch (and main, for the config): the moment the bus changes here.
        ``shallow``: only the tips (a worker's cache reads the bus, never its history)."""
        if main:
            self.fetch_main()
        if not self.remote:
            return
        spec = f"+refs/heads/{self.prefix}/*:{self.tracking(self.prefix)}/*"
        if shallow:
            p = self.git.proc("fetch", "--quiet", "--no-tags", "--refmap=", "--prune", "--depth=1", self.remote, spec)
            err = None if p.returncode == 0 else p.stderr.decode(errors="replace") or f"exit {p.returncode}"
        else:
            err = self.git.fetch_refs(self.remote, spec, prune=True)
        if err is not None:
            raise FleetError(f"message bus: git fetch from {self.remote} failed: {git_reason(err, 'no reason given')}")

    def fetch_branches(self, branches: list[str]) -> None:
        """Fetch these bus branches; one that does not exist on the remote is forgotten here."""
        if not self.remote:
            return
        specs = [f"+refs/heads/{b}:{self.tracking(b)}" for b in branches]
        err = self.git.fetch_refs(self.remote, *specs)
        if err is not None and "couldn't find remote ref" in err:
            for b in branches:
                self.git.proc("update-ref", "-d", self.tracking(b))
            err = None
            found = self.git.proc("ls-remote", self.remote, *(f"refs/heads/{b}" for b in branches))
            if found.returncode:
                err = found.stderr.decode(errors="replace")
            else:
                there = [line.split("\t")[1][len("refs/heads/"):] for line in found.stdout.decode().splitlines() if "\t" in line]
                if there:
                    err = self.git.fetch_refs(self.remote, *(f"+refs/heads/{b}:{self.tracking(b)}" for b in there))
        if err is not None:
            raise FleetError(f"message bus: git fetch from {self.remote} failed: {git_reason(err, 'no reason given')}")

    # -- sending -----------------------------------------------------------
    def check_new(self, cfg: Config, sender: str, to: str, mtype: str, body: str) -> None:
        """Refuse what no inbox may hold: one line naming the rule."""
        if not is_safe_id(sender) or ".." in sender:
            raise FleetError(f"--from '{printable(sender, 80)}': a sender is a name ({NAME_RULE})")
        if to not in cfg.agents:
            raise _Unknown(f"unknown agent '{printable(to, 80)}': a message goes to one of the agents of "
                           f"state/config.json ({', '.join(sorted(cfg.agents)[:20]) or 'none'})")
        types = message_types(cfg)
        if mtype not in types:
            raise FleetError(f"unknown message type '{printable(mtype, 40)}' (types: {', '.join(types)}; "
                             "more are added in state/config.json bus.types)")
        size = len(body.encode("utf-8", errors="surrogatepass"))
        if size > cfg.bus.max_body_bytes:
            raise FleetError(f"message body is {size} bytes, over bus.max_body_bytes ({cfg.bus.max_body_bytes})")
        try:
            canonical.check(body)
        except canonical.JSONProblem as e:
            raise FleetError(f"message body cannot be kept: {e}") from None
        keys.refuse(body, "message body")

    def send(self, sender: str, to: str, mtype: str, body: str, *, lane: str | None = None,
             msg_id: str | None = None) -> Sent:
        """Send one message: append it to this lane's outbox and push."""
        return self.post([{"id": msg_id, "from": sender, "to": to, "type": mtype, "body": body}], lane=lane)

    def post(self, items: list[dict[str, Any]], beats: Iterable[dict[str, Any]] = (), *,
             lane: str | None = None, skip_refused: list[dict[str, Any]] | None = None) -> Sent:
        """Append messages (``id`` None: a new one; ``ts`` None: now) and heartbeats to
        the lane's outbox in one commit and one push. A message whose id the lane
        holds with the same content is not sent again; with other content it is
        refused. ``skip_refused``: collect refused messages there ({item, why})
        instead of failing the whole post."""
        if lane is None:  # this clone's own, looked up once per Bus
            self._lane = self._lane or lane_of(self.repo)
            lane = self._lane
        else:
            lane = lane_of(self.repo, lane)
        beats = list(beats)
        store = _Branch(self, self.outbox(lane), _OUT_KINDS, f"bus-out-{lane}")
        if not self._has_main:
            self._main()
            self._has_main = True
        fixed = [dict(i) for i in items]
        for attempt in (1, 2):
            try:
                ch, pushed = store.change(lambda r, cfg, at: self._decide_post(r, cfg, at, lane, fixed, beats, skip_refused),
                                          fetched=True)
                break
            except _Unknown:
                if attempt == 2 or not self.repo.remote:
                    raise
                self.fetch_main()  # main may have agents this clone has not seen yet
                if skip_refused is not None:
                    skip_refused.clear()
        sent: Sent = ch.result
        sent.branch, sent.remote = store.branch, self.remote
        sent.commit = store.pushed if pushed else None
        return sent

    def _decide_post(self, records: Records, cfg: Config, at: _dt.datetime, lane: str, items: list[dict[str, Any]],
                     beats: list[dict[str, Any]], refused: list[dict[str, Any]] | None) -> Change:
        if refused is not None:
            refused.clear()
        writes: dict[str, dict[str, Any]] = {}
        out = Sent([], read=records.tip)
        for item in items:
            try:
                self.check_new(cfg, item["from"], item["to"], item["type"], item["body"])
                if item.get("id") is None:
                    item["id"] = new_id(at)  # decided once: a lost race sends the same message again
                if not is_safe_id(item["id"]) or ".." in item["id"]:
                    raise FleetError(f"message id '{printable(item['id'], 80)}': an id is a name of 1 to 128 "
                                     "letters, digits, '_', '.', '-', the first a letter or digit")
                if device_name(item["id"]):  # to/<agent>/CON.json: no clone on Windows could hold it
                    raise FleetError(f"message id '{item['id']}': a name Windows keeps for a device; pick another")
                msg = {"id": item["id"], "ts": item.get("ts") or stamp(at), "from": item["from"], "to": item["to"],
                       "type": item["type"], "body": item["body"]}
                path = message_path(msg["to"], msg["id"])
                had = records.docs.get(path) or writes.get(path)
                if had is not None and not had.get("problem"):
                    if Message.parse(had).same(Message.parse(msg)):
                        out.already.append(msg["id"])
                        continue
                    raise FleetError(f"message id {msg['id']} is already used in {self.outbox(lane)} "
                                     f"({records.tip and records.tip[:12]}) with other content: an id names one message")
                writes[path] = msg
                out.messages.append(msg)
            except _Unknown:
                if refused is None:
                    raise
                refused.append({"item": item, "why": "unknown agent"})
            except FleetError as e:
                if refused is None:
                    raise
                refused.append({"item": item, "why": str(e)})
        for b in beats:
            had = records.docs.get(beat_path(b["name"]))
            if had is not None and not had.get("problem") and had["ts"] >= b["ts"] and not _ahead(had["ts"], at):
                continue  # as new already (a merge run again): a heartbeat never goes back
            writes[beat_path(b["name"])] = {k: v for k, v in b.items() if v is not None}
        if not writes:
            return Change([], out)
        names = ", ".join(f"{m['from']} -> {m['to']} ({m['type']}) {m['id']}" for m in out.messages[:20])
        more = f" and {len(out.messages) - 20} more" if len(out.messages) > 20 else ""
        posted = sum(1 for p in writes if p.startswith(BEAT_DIR + "/"))
        head = f"bus: {len(out.messages)} message(s)" + (f", {posted} heartbeat(s)" if posted else "")
        return Change([(f"{head}\n\n{names}{more}\n", writes)], out)

    # -- reading -----------------------------------------------------------
    def lanes(self) -> dict[str, str]:
        """Outbox branch -> commit, as last fetched."""
        prefix = self.tracking(self.outbox(""))
        return {self.outbox(r.name[len(prefix):]): r.commit for r in self.git.refs(prefix)}

    def inbox(self, agent: str, *, fetch: bool = True) -> Inbox:
        """The messages to ``agent`` not in its archive, oldest first (fetching every
        bus branch first), and the files that could not be read as messages."""
        if fetch:
            self.fetch()
        return self._union([agent])[agent]

    def inboxes(self, agents: list[str], *, fetch: bool = True) -> dict[str, Inbox]:
        if fetch:
            self.fetch()
        return self._union(agents)

    def _union(self, agents: list[str]) -> dict[str, Inbox]:
        lanes = self.lanes()
        boxes = {a: self.git.rev_parse(self.tracking(self.box(a))) for a in agents}
        found: dict[str, dict[str, list[tuple[str, str, str]]]] = {a: {} for a in agents}  # agent -> id -> [(where, sha)]
        out = {a: Inbox(a, [], [], dict(lanes), self.remote) for a in agents}  # every outbox is read
        folders = [f"{MSG_DIR}/{a}/" for a in agents]
        for branch, commit in sorted(lanes.items()):
            links: set[str] = set()
            subs: set[str] = set()
            try:
                entries = self.git.ls_tree(commit, *folders, links=links, gitlinks=subs)
            except (FleetError, UnicodeDecodeError) as e:  # a lane written by hand: it costs itself only
                why = "holds a file name that is not UTF-8" if isinstance(e, UnicodeDecodeError) else printable(str(e), 200)
                for a in agents:
                    out[a].quarantined.append(Quarantined(f"{branch}:{MSG_DIR}/", f"lane not read: {why}"))
                continue
            for path in sorted(subs):  # git lists no content for it: named here, as a link is
                agent = path.split("/")[1]
                if agent in out:
                    out[agent].quarantined.append(Quarantined(f"{branch}:{printable(path, 200)}", GITLINK))
            for path, sha in entries.items():
                parts = path.split("/")
                agent = parts[1]
                if agent not in out:
                    continue
                where = f"{branch}:{printable(path, 200)}"
                if not utf8(path):  # (fleet.git.decode)
                    out[agent].quarantined.append(Quarantined(where, "its name is not UTF-8; a message file is "
                                                                     "to/<agent>/<id>.json"))
                    continue
                if len(parts) != 3 or not parts[2].endswith(".json"):
                    out[agent].quarantined.append(Quarantined(where, "not a message file (to/<agent>/<id>.json)"))
                    continue
                if path in links:
                    out[agent].quarantined.append(Quarantined(where, LINK))
                    continue
                found[agent].setdefault(parts[2][: -len(".json")], []).append((where, sha, branch))
        archived: dict[str, set[str]] = {}
        for a, tip in boxes.items():
            if tip:
                out[a].read[self.box(a)] = tip
                archived[a] = {p[len(ARCHIVE_DIR) + 1: -len(".json")] for p in self.git.ls_tree(tip, ARCHIVE_DIR + "/")}
        wanted = [sha for a in agents for mid, rows in found[a].items() if mid not in archived.get(a, ()) for _, sha, _ in rows]
        sizes = self.git.sizes(wanted)
        blobs = self.git.cat_blobs([s for s in wanted if sizes[s] <= MAX_FILE_BYTES])
        for a in agents:
            box = out[a]
            for mid, rows in sorted(found[a].items()):
                if mid in archived.get(a, ()):
                    continue
                copies = [m for where, sha, _ in sorted(rows)
                          if (m := self._message(where, sha, sizes, blobs, a, box.quarantined)) is not None]
                if copies and all(m.same(copies[0]) for m in copies):
                    box.messages.append(copies[0])
                elif copies:  # whichever is genuine, git cannot tell: none is delivered, every copy is named
                    wheres = ", ".join(m.where for m in copies)
                    box.quarantined += [Quarantined(m.where, f"message id {mid} is reused with other content "
                                                             f"({wheres}); none of them is delivered")
                                        for m in copies]
            box.messages.sort(key=lambda m: (m.ts, m.id))
        return out

    def _message(self, where: str, sha: str, sizes: dict[str, int], blobs: dict[str, bytes], agent: str,
                 quarantined: list[Quarantined]) -> Message | None:
        """The message in one inbox file, or None with the reason recorded."""
        if sizes[sha] > MAX_FILE_BYTES:
            quarantined.append(Quarantined(where, f"file is {sizes[sha]} bytes; a message file is at most {MAX_FILE_BYTES}"))
            return None
        try:
            doc = canonical.load(blobs[sha], where)
        except FleetError as e:
            quarantined.append(Quarantined(where, printable(str(e), 300)))
            return None
        if not isinstance(doc, dict):
            quarantined.append(Quarantined(where, "not a JSON object (schemas/message.schema.json)"))
            return None
        why = problem(doc, where)
        if why is None and doc["to"] != agent:
            why = f"{where}: addressed to {doc['to']!r}, filed under {agent!r}"
        if why is None and doc["type"] not in (types := message_types(self.cfg)):
            # as `fleet msg send` refuses it: a lane written by hand gets no type the fleet does not know
            why = (f"{where}: type {doc['type']!r} is not a message type of this fleet ({', '.join(types)}; "
                   "bus.types in state/config.json adds more)")
        if why is None and len(doc["body"].encode("utf-8", errors="surrogatepass")) > self.cfg.bus.max_body_bytes:
            why = f"{where}: body over bus.max_body_bytes ({self.cfg.bus.max_body_bytes})"
        if why is not None:
            quarantined.append(Quarantined(where, printable(why, 300)))
            return None
        return Message.parse(doc, where)

    def archive(self, agent: str, *, fetch: bool = True) -> tuple[list[Message], str | None, list[Quarantined]]:
        """The agent's acked messages, oldest ack first; the archive's commit; its bad files."""
        branch = self.box(agent)
        if fetch:
            self.fetch_main()
            self.fetch_branches([branch])
        store = _Branch(self, branch, _BOX_KINDS, f"bus-box-{agent}")
        records = store.read()
        msgs, bad = [], []
        for path, doc in sorted(records.docs.items()):
            if doc.get("problem"):
                bad.append(Quarantined(f"{branch}:{path}", doc["problem"]))
            else:
                msgs.append(Message.parse(doc, f"{branch}:{path}"))
        msgs.sort(key=lambda m: (m.acked_at or "", m.ts, m.id))
        return msgs, records.tip, bad

    # -- acking ------------------------------------------------------------
    def ack(self, agent: str, ids: list[str] | None, *, fetch: bool = True, missing_ok: bool = False) -> Acked:
        """Move messages of ``agent``'s inbox (``ids``; None: all of them) to its
        archive: one commit, one compare-and-swap push on the agent's own branch.
        ``missing_ok``: an id in neither the inbox nor the archive is skipped, not an error."""
        box = self.inbox(agent, fetch=fetch)
        if agent not in self.cfg.agents:
            raise FleetError(f"unknown agent '{printable(agent, 80)}': not among the agents of state/config.json")
        by_id = {m.id: m for m in box.messages}
        wanted = list(by_id) if ids is None else list(dict.fromkeys(ids))
        store = _Branch(self, self.box(agent), _BOX_KINDS, f"bus-box-{agent}")

        def decide(records: Records, cfg: Config, at: _dt.datetime) -> Change:
            out = Acked(agent, [], [], read=records.tip)
            writes = {}
            for mid in wanted:
                path = archive_path(mid)
                if path in records.docs:
                    out.already.append(mid)
                    continue
                msg = by_id.get(mid)
                if msg is None and missing_ok:
                    out.missing.append(mid)
                    continue
                if msg is None:
                    raise FleetError(f"no message '{printable(mid, 80)}' in {agent}'s inbox "
                                     f"(`fleet msg inbox {agent}` lists them; `fleet msg archive {agent}` the acked)")
                writes[path] = {**msg.to_json(), "acked_at": stamp(at)}
                out.acked.append(mid)
            if not writes:
                return Change([], out)
            shown = ", ".join(out.acked[:20]) + (f" and {len(out.acked) - 20} more" if len(out.acked) > 20 else "")
            return Change([(f"bus: {agent} acked {len(out.acked)} message(s)\n\n{shown}\n", writes)], out)

        ch, pushed = store.change(decide, fetched=True)
        acked: Acked = ch.result
        acked.branch, acked.remote = store.branch, self.remote
        acked.commit = store.pushed if pushed else None
        acked.inbox_read = box.read
        return acked

    # -- heartbeats --------------------------------------------------------
    def beat(self, name: str, kind: str, *, tick: int | None = None, note: str | None = None,
             lane: str | None = None) -> Sent:
        """Post a heartbeat of ``name`` (a worker, agent or machine)."""
        if not is_safe_id(name) or ".." in name:
            raise FleetError(f"heartbeat name '{printable(name, 80)}': not a name ({NAME_RULE})")
        if device_name(name):  # beat/<name>.json
            raise FleetError(f"heartbeat name '{name}': a name Windows keeps for a device; pick another")
        if kind not in KINDS:
            raise FleetError(f"heartbeat kind '{printable(kind, 40)}': one of {', '.join(KINDS)}")
        b = {"name": name, "kind": kind, "ts": stamp(now()), "tick": tick, "note": note[:MAX_NOTE] if note else None}
        return self.post([], [b], lane=lane)

    def heartbeats(self, *, fetch: bool = True,
                   at: _dt.datetime | None = None) -> tuple[dict[str, dict[str, Any]], list[Quarantined]]:
        """The newest heartbeat of each name across every outbox, and every file that
        is none, named: not a valid record, not a real time, or from more than
        MAX_AHEAD seconds after ``at`` (default now)."""
        if fetch:
            self.fetch(main=False)
        at = at or now()
        newest: dict[str, dict[str, Any]] = {}
        bad: list[Quarantined] = []
        links: set[str] = set()  # "<branch>:<path>"
        rows = []
        for branch, commit in sorted(self.lanes().items()):
            here: set[str] = set()
            subs: set[str] = set()
            try:
                found = self.git.ls_tree(commit, BEAT_DIR + "/", links=here, gitlinks=subs)
            except (FleetError, UnicodeDecodeError) as e:  # a lane written by hand: it costs itself only
                why = "holds a file name that is not UTF-8" if isinstance(e, UnicodeDecodeError) else printable(str(e), 200)
                bad.append(Quarantined(f"{branch}:{BEAT_DIR}/", f"lane not read: {why}"))
                continue
            rows += [(branch, path, sha) for path, sha in found.items()]
            links |= {f"{branch}:{p}" for p in here}
            bad += [Quarantined(f"{branch}:{printable(p, 200)}", GITLINK) for p in sorted(subs)]
        for where in sorted(links):
            bad.append(Quarantined(printable(where, 300), LINK))
        rows = [r for r in rows if f"{r[0]}:{r[1]}" not in links]
        sizes = self.git.sizes([sha for _, _, sha in rows])
        blobs = self.git.cat_blobs([sha for _, _, sha in rows if sizes[sha] <= MAX_FILE_BYTES])
        for branch, path, sha in rows:
            where = f"{branch}:{printable(path, 200)}"
            if sha not in blobs:
                bad.append(Quarantined(where, f"file is {sizes[sha]} bytes; a heartbeat file is at most {MAX_FILE_BYTES}"))
                continue
            try:
                doc = canonical.load(blobs[sha], where)
            except FleetError as e:
                bad.append(Quarantined(where, printable(str(e), 300)))
                continue
            if not isinstance(doc, dict):
                why: str | None = f"{where}: not a heartbeat record (schemas/heartbeat.schema.json)"
            else:
                why = problem(doc, where, "heartbeat")
                if why is None and path != beat_path(doc["name"]):
                    why = f"{where}: the file's name must be its name ({doc['name']}.json)"
                if why is None and _ahead(doc["ts"], at):
                    why = (f"{where}: at /ts: {doc['ts']} is more than {MAX_AHEAD}s after this clock's "
                           f"{stamp(at)}: a heartbeat from the future would keep {doc['name']} alive until then")
            if why or not isinstance(doc, dict):
                bad.append(Quarantined(where, printable(why or "", 300)))
                continue
            if doc["name"] not in newest or doc["ts"] > newest[doc["name"]]["ts"]:
                newest[doc["name"]] = {**doc, "lane": branch.rsplit("/", 1)[-1]}
        return newest, bad


@dataclass
class Acked:
    agent: str
    acked: list[str]
    already: list[str]
    branch: str = ""
    commit: str | None = None
    read: str | None = None
    remote: str | None = None
    inbox_read: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # with missing_ok: in neither the inbox nor the archive

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "acked": self.acked, "already": self.already, "branch": self.branch,
                "pushed": self.commit, "read": {self.branch: self.read, **self.inbox_read}, "remote": self.remote}


# -- who is alive -------------------------------------------------------------
def _ahead(ts: str, at: _dt.datetime) -> bool:
    """Whether stamp ``ts`` (a real time: its record passed ``problem``) is more than MAX_AHEAD after ``at``."""
    return (parse_stamp(ts) - at).total_seconds() > MAX_AHEAD


def liveness(beats: dict[str, dict[str, Any]], cfg: Config, at: _dt.datetime) -> list[dict[str, Any]]:
    """Each name that sent a heartbeat, and every agent once the fleet uses the bus:
    alive, late or silent (bus.late_seconds, bus.silent_seconds), and when it was last seen."""
    from fleet.tick_messages import in_use

    rows: list[dict[str, Any]] = []
    for name in sorted(set(beats) | (set(cfg.agents) if in_use(cfg) else set())):
        b = beats.get(name)
        if b is None:
            rows.append({"name": name, "kind": "agent", "status": "silent", "last_seen": None, "age_seconds": None,
                         "lane": None, "tick": None})
            continue
        age = max(0.0, (at - parse_stamp(b["ts"])).total_seconds())
        status = "alive" if age < cfg.bus.late_seconds else "late" if age < cfg.bus.silent_seconds else "silent"
        rows.append({"name": name, "kind": b["kind"], "status": status, "last_seen": b["ts"], "age_seconds": round(age, 1),
                     "lane": b.get("lane"), "tick": b.get("tick")})
    return rows


def status_of(repo: FleetRepo, cfg: Config, at: _dt.datetime) -> dict[str, Any]:
    """For fleet status: who is alive, late or silent; the bus's error instead if it cannot be read."""
    try:
        bus = Bus(repo, cfg)
        beats, bad = bus.heartbeats(at=at)
    except FleetError as e:
        return {"error": printable(str(e), 300), "who": []}
    return {"error": None, "who": liveness(beats, cfg, at), "quarantined": [q.to_json() for q in bad]}
