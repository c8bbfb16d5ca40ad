"""A local Anthropic Messages API for tests: ``POST /v1/messages``, non-streaming.

It speaks the wire format the official SDK expects (message objects with
``tool_use`` and ``text`` blocks, ``usage`` with cache reads and writes, error
bodies ``{"type": "error", "error": {"type", "message"}, "request_id"}``, the
``request-id``, ``retry-after`` and ``anthropic-ratelimit-*`` headers) and
checks requests as strictly as the real API does in the places a client tends
to get wrong (auth and version headers, required fields, tool names, empty
text blocks, at most four ``cache_control`` breakpoints, ``metadata``).

One asyncio event loop in a daemon thread serves every connection (HTTP/1.1
with keep-alive, a minimal parser), so hundreds of requests can be in flight
at once at almost no CPU cost::

    with AnthropicAPI(latency=1.0) as api:
        client = anthropic.Anthropic(api_key="k", base_url=api.url)
        ...
        api.requests      # every request: headers (keys masked), body, arrival

Scripting. Each request takes the first of: the next queued action for its
agent (``metadata.user_id``), the next queued action for any agent, the first
rule of its agent that answers, the first rule for any agent that answers,
the default behaviour. Actions are :class:`Reply`, :class:`Fail` and
:class:`Drop`; helpers build the usual ones (:func:`tool_use`, :func:`text`,
:func:`rate_limited`, :func:`overloaded`, :func:`api_error`, :func:`slow`,
:func:`key_echo`). A rule is an action (always applies) or a function of the
:class:`Seen` request returning an action or None.

The default behaviour is deterministic for (seed, agent, tick): one tool call
chosen among the request's tools (not ``do_nothing`` when there are others),
with input made from its JSON Schema; an id-like string field (one with a
``pattern``) gets an id the system prompt lists (a token that starts a
``- `` line), so calls in any world often succeed. A prompt that describes the
example social network (channels, recent posts) gets what the older tests
expect of it: a ``post`` in a channel it names, or a ``comment`` on a post it
lists.

Usage reflects prompt caching: the prefix up to a ``cache_control``
breakpoint (tools, then system, then messages) is written to the cache the
first time it is seen (``cache_creation_input_tokens``) and read from it
after (``cache_read_input_tokens``); ``input_tokens`` counts the rest. Tokens
are estimated at four characters each.

Secrets. The server never prints or logs anything. The API key of a request is
kept only as a fingerprint (:meth:`AnthropicAPI.saw_key`); recorded headers
show ``[redacted]`` in its place. Only a :func:`key_echo` action puts the key
into a response, for canary tests.

Run standalone (its own process, so its CPU is not counted with the client's)::

    python -m tests.servers.anthropic_api --latency 1
    # prints ANTHROPIC_BASE_URL=http://127.0.0.1:PORT, serves until SIGINT/SIGTERM;
    # GET /_stats gives {"requests", "in_flight", "max_in_flight"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http
import itertools
import json
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Union

CHARS_PER_TOKEN = 4
MASK = "[redacted]"
AUTH_HEADERS = ("x-api-key", "authorization", "proxy-authorization")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
MAX_BREAKPOINTS = 4
MAX_OUTPUT_TOKENS = 128_000
TOP_LEVEL = {
    "model", "max_tokens", "messages", "system", "tools", "tool_choice", "metadata", "temperature", "top_p",
    "top_k", "stop_sequences", "stream", "thinking", "service_tier", "container", "mcp_servers",
    "context_management", "output_config", "output_format", "inference_geo", "cache_control", "diagnostics",
}
ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "timeout_error": 504, "overloaded_error": 529,
}


# -- actions ---------------------------------------------------------------

@dataclass
class Reply:
    """A 200 message. ``content`` None: the default behaviour's blocks."""

    content: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None  # fields to override in the computed usage
    stop_reason: str | None = None  # default: tool_use if any tool_use block, else end_turn
    model: str | None = None  # default: the request's model
    delay: float = 0.0  # seconds before answering, added to the server's latency


@dataclass
class Fail:
    """An error response with the API's error body."""

    status: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    echo_key: bool = False  # put the request's API key into the message (canary tests only)


@dataclass
class Drop:
    """Close the connection without answering (after ``delay``)."""

    delay: float = 0.0


Action = Union[Reply, Fail, Drop]
Rule = Union[Action, Callable[["Seen"], Action | None]]


def tool_use(name: str, input: Any, id: str | None = None) -> dict[str, Any]:
    """A ``tool_use`` content block."""
    return {"type": "tool_use", "id": id or _id("toolu_"), "name": name, "input": input}


def text(value: str) -> dict[str, Any]:
    """A ``text`` content block."""
    return {"type": "text", "text": value}


def reply(*blocks: dict[str, Any], **kw: Any) -> Reply:
    """A reply with exactly these content blocks."""
    return Reply(list(blocks), **kw)


def rate_limited(retry_after: float = 1, **kw: Any) -> Fail:
    """429 rate_limit_error with ``retry-after`` (seconds, as the API sends it)."""
    value = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
    return Fail(429, "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute. "
                "For details, refer to: https://docs.claude.com/en/api/rate-limits.",
                headers={"retry-after": value, "anthropic-ratelimit-requests-remaining": "0"}, **kw)


def overloaded(retry_after: float | None = None, **kw: Any) -> Fail:
    """529 overloaded_error (optionally with ``retry-after``)."""
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    return Fail(529, "overloaded_error", "Overloaded", headers=headers, **kw)


def api_error(**kw: Any) -> Fail:
    """500 api_error."""
    return Fail(500, "api_error", "Internal server error", **kw)


def slow(seconds: float, content: list[dict[str, Any]] | None = None) -> Reply:
    """Answer (default behaviour unless ``content``) only after ``seconds``."""
    return Reply(content, delay=seconds)


def key_echo(status: int = 500, type: str | None = None) -> Fail:
    """An error whose message repeats the request's API key, as a careless proxy might."""
    kind = type or next((t for t, s in ERROR_STATUS.items() if s == status), "api_error")
    return Fail(status, kind, "upstream rejected the request made with key", echo_key=True)


# -- what the server saw ---------------------------------------------------

@dataclass
class Seen:
    """One request as received, and what it was answered."""

    n: int
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; API keys replaced by [redacted]
    body: Any  # the parsed JSON body (None if not JSON)
    arrival: float  # time.monotonic() when the request was complete
    wall: float  # time.time() of the same moment
    key_fingerprint: str | None = None
    status: int | None = None
    response: Any = None
    answered: float | None = None  # time.monotonic() when the answer was written
    client_gone: bool = False  # the client had closed the connection before the answer

    @property
    def agent(self) -> str | None:
        meta = self.body.get("metadata") if isinstance(self.body, dict) else None
        return meta.get("user_id") if isinstance(meta, dict) else None

    @property
    def attempt(self) -> int:
        """The SDK's retry count for this request (0 for the first attempt)."""
        try:
            return int(self.headers.get("x-stainless-retry-count", "0"))
        except ValueError:
            return 0

    @property
    def system(self) -> list[dict[str, Any]]:
        s = self.body.get("system") if isinstance(self.body, dict) else None
        if isinstance(s, str):
            return [{"type": "text", "text": s}]
        return s or []

    @property
    def system_text(self) -> str:
        return "\n\n".join(b.get("text", "") for b in self.system if isinstance(b, dict))

    @property
    def tool_names(self) -> list[str]:
        tools = self.body.get("tools") if isinstance(self.body, dict) else None
        return [t.get("name", "") for t in tools or [] if isinstance(t, dict)]

    @property
    def usage(self) -> dict[str, Any] | None:
        return self.response.get("usage") if isinstance(self.response, dict) else None


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def tokens(value: Any) -> int:
    s = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                                        sort_keys=True)
    return max(1, math.ceil(len(s) / CHARS_PER_TOKEN))


# -- the world described by a prompt ---------------------------------------

@dataclass
class PromptWorld:
    tick: int = 0
    agents: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    posts: list[tuple[str, str, str]] = field(default_factory=list)  # (id, channel, author)


_SECTION = re.compile(r"^(Agents|Channels|Recent posts)\b.*:\s*$")


def parse_world(system: str) -> PromptWorld:
    """Agents, channels and posts named in a fleet-style system prompt (best effort)."""
    w = PromptWorld()
    m = re.search(r"\btick (\d+)\b", system)
    if m:
        w.tick = int(m.group(1))
    section = None
    for line in system.splitlines():
        s = _SECTION.match(line.strip())
        if s:
            section = s.group(1)
            continue
        if not line.startswith("- "):
            if line.strip():
                section = None
            continue
        item = line[2:]
        if section == "Agents":
            m = re.match(r"([A-Za-z0-9][A-Za-z0-9_.-]*)", item)
            if m:
                w.agents.append(m.group(1))
        elif section == "Channels":
            m = re.match(r"([A-Za-z0-9][A-Za-z0-9_.-]*):", item)
            if m:
                w.channels.append(m.group(1))
        elif section == "Recent posts":
            m = re.match(r"(\S+) in (\S+) by (\S+)", item)
            if m:
                w.posts.append((m.group(1), m.group(2), m.group(3)))
    return w


_ID_LINE = re.compile(r"^- ([A-Za-z0-9][A-Za-z0-9_.-]*)")


def prompt_ids(system: str) -> dict[str, list[str]]:
    """The tokens that start the prompt's list lines (``- ID ...``) by the title
    above them, once each, in order: the ids of the documents a fleet prompt
    lists (and a few words)."""
    out: dict[str, list[str]] = {}
    title = ""
    for line in system.splitlines():
        m = _ID_LINE.match(line)
        if m:
            found = out.setdefault(title, [])
            if m.group(1).rstrip(".") not in found:
                found.append(m.group(1).rstrip("."))
        elif line.strip():
            title = line.strip()
    return out


def ids_for(field_name: str, ids: dict[str, list[str]]) -> list[str]:
    """The ids listed under titles that name the field in their first two words
    (``ticket`` under "New tickets:", not under "Comments on tickets:"), else every id."""
    words = {field_name.lower(), field_name.lower() + "s"}
    named = [i for title, found in ids.items() if words & set(re.findall(r"[a-z0-9]+", title.lower())[:2])
             for i in found]
    return list(dict.fromkeys(named or [i for found in ids.values() for i in found]))


def input_for(schema: Any, rng: random.Random, ids: dict[str, list[str]], said: str, depth: int = 0,
              name: str = "") -> Any:
    """A value for a JSON Schema; for an id-like string (one with a ``pattern``),
    one of ``ids`` (:func:`prompt_ids`), preferably listed under its field's name."""
    if not isinstance(schema, dict) or depth > 6:
        return said
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if not (isinstance(o, dict) and o.get("type") == "null")] or schema[key]
            return input_for(rng.choice(options), rng, ids, said, depth + 1, name)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {n: input_for(props.get(n, {}), rng, ids, said, depth + 1, n) for n in schema.get("required") or []}
    if kind == "array":
        return [input_for(schema.get("items", {}), rng, ids, said, depth + 1, name) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    lo, hi = schema.get("minLength", 0), schema.get("maxLength", 200)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            fits = [i for i in ids_for(name, ids) if re.search(pattern, i) and lo <= len(i) <= hi]
        except re.error:
            fits = []
        if fits:
            return rng.choice(fits)
    return (said + "." * lo)[:max(lo, min(hi, len(said)))]


def default_blocks(seen: Seen, seed: int = 0) -> list[dict[str, Any]]:
    """One deterministic tool call that fits the request's tools and world."""
    tools = {t["name"]: t for t in seen.body.get("tools") or [] if isinstance(t, dict) and "name" in t}
    agent = seen.agent or "someone"
    w = parse_world(seen.system_text)
    h = int.from_bytes(hashlib.sha256(f"{seed}|{agent}|{w.tick}".encode()).digest()[:8], "big")
    options: list[dict[str, Any]] = []
    if "post" in tools and w.channels:  # the example social network
        ch = w.channels[h % len(w.channels)]
        options.append(tool_use("post", {"channel": ch, "title": f"{agent} at tick {w.tick}",
                                         "body": f"What {agent} noticed at tick {w.tick}.", "tags": ["test"]}))
    others = [p for p in w.posts if p[2] != agent] or w.posts
    if "comment" in tools and others:
        pid = others[(h >> 8) % len(others)][0]
        options.append(tool_use("comment", {"post": pid, "body": f"{agent} agrees, at tick {w.tick}."}))
    if options:
        return [options[(h >> 16) % len(options)]]
    names = sorted(n for n in tools if n != "do_nothing") or sorted(tools)
    if not names:
        return [text("Nothing to do: no tools were offered.")]
    name = names[h % len(names)]
    rng = random.Random(h)
    said = f"{agent} at tick {w.tick}"
    return [tool_use(name, input_for(tools[name].get("input_schema", {}), rng, prompt_ids(seen.system_text), said))]


# -- the server --------------------------------------------------------------

class _BadRequest(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class AnthropicAPI:
    """The Messages API on 127.0.0.1 (a free port), in a background thread.

    ``latency``: seconds before every answer (a number, or a function of the
    :class:`Seen` request). ``min_cache_tokens``: prefixes shorter than this
    are not cached (the real API: 1024 tokens and up, by model).
    ``cache_visible``: when a new cache entry can be read by other requests:
    ``"answer"`` (as the real API: once the response that wrote it has been
    sent, so requests sent at the same moment all pay for the write) or
    ``"arrival"`` (at once). ``api_key``: if given, other keys get 401.
    ``record``: keep every request (turn it off for long benchmarks).
    ``model_ids``: the model id a response names for a requested model, as the
    real API answers an alias with a dated snapshot id (default: the same).
    """

    def __init__(self, *, latency: float | Callable[[Seen], float] = 0.0, min_cache_tokens: int = 0,
                 cache_visible: str = "answer", model_ids: dict[str, str] | None = None,
                 seed: int = 0, api_key: str | None = None, record: bool = True, port: int = 0) -> None:
        self.latency = latency
        self.min_cache_tokens = min_cache_tokens
        self.cache_visible = cache_visible
        self.model_ids = dict(model_ids or {})
        self.seed = seed
        self.record = record
        self.default: Callable[[Seen], list[dict[str, Any]]] = lambda s: default_blocks(s, self.seed)
        self._expected = _fingerprint(api_key) if api_key else None
        self._port = port
        self._lock = threading.Lock()
        self._queues: dict[str | None, deque[Action]] = {}
        self._rules: dict[str | None, list[Rule]] = {}
        self._seen: list[Seen] = []
        self._fingerprints: set[str] = set()
        self._cache: dict[str, float] = {}  # prefix digest -> expiry (monotonic)
        self._counter = itertools.count(1)
        self._conns: set[asyncio.Task[Any]] = set()
        self.errors: list[str] = []  # the server's own failures (bugs in this file), never printed
        self.in_flight = 0
        self.max_in_flight = 0
        self.total = 0
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------
    def __enter__(self) -> AnthropicAPI:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(lambda _l, ctx: self.errors.append(str(ctx.get("message"))))
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._connection, "127.0.0.1", self._port, backlog=4096, limit=1 << 24))
            except BaseException as e:  # noqa: BLE001 - reported to start()
                failure.append(e)
                ready.set()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{self.port}"
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="anthropic-api", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"the test Anthropic server did not start: {failure[0] if failure else 'timeout'}")

    def stop(self) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def shutdown() -> None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._loop = None

    # -- scripting ----------------------------------------------------------
    def script(self, *actions: Action, agent: str | None = None) -> AnthropicAPI:
        """Queue actions: each answers one request (of ``agent``, or of anyone)."""
        with self._lock:
            self._queues.setdefault(agent, deque()).extend(actions)
        return self

    def rule(self, rule: Rule, agent: str | None = None) -> AnthropicAPI:
        """A standing rule (an action, or a function returning one or None)."""
        with self._lock:
            self._rules.setdefault(agent, []).append(rule)
        return self

    def reset(self) -> None:
        """Forget queues, rules, recorded requests and the prompt cache."""
        with self._lock:
            self._queues.clear()
            self._rules.clear()
            self._seen.clear()
            self._cache.clear()

    # -- what was seen ------------------------------------------------------
    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def requests_for(self, agent: str) -> list[Seen]:
        return [s for s in self.requests if s.agent == agent]

    def saw_key(self, key: str) -> bool:
        """Whether any request carried this API key (compared by fingerprint)."""
        return _fingerprint(key) in self._fingerprints

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Seen]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            seen = self.requests
            if len(seen) >= count:
                return seen
            time.sleep(0.01)
        raise TimeoutError(f"the server saw {len(self.requests)} request(s), not {count}")

    def stats(self) -> dict[str, int]:
        return {"requests": self.total, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight}

    # -- HTTP -------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head[:-4].decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    await self._write(writer, 400, {}, b"", keep=False)
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                try:
                    if "chunked" in headers.get("transfer-encoding", "").lower():
                        body = await self._chunked(reader)
                    else:
                        body = await reader.readexactly(int(headers.get("content-length") or 0))
                except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                    return
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                status, extra, payload = await self._answer(method, target, headers, body, reader)
                if status == 0:  # Drop
                    return
                await self._write(writer, status, extra, payload, keep)
                if not keep:
                    return
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - a bug here must not kill the server; kept for assertions
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            self._conns.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)

    async def _write(self, writer: asyncio.StreamWriter, status: int, headers: dict[str, str], payload: bytes,
                     keep: bool) -> None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Overloaded" if status == 529 else "Unknown"
        head = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(payload)}",
                f"connection: {'keep-alive' if keep else 'close'}",
                f"date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S GMT')}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    # -- the API ------------------------------------------------------------
    async def _answer(self, method: str, target: str, headers: dict[str, str], raw: bytes,
                      reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        path = target.split("?", 1)[0]
        if path == "/_stats" and method == "GET":
            return 200, {"content-type": "application/json"}, json.dumps(self.stats()).encode()
        self.total += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._messages(method, path, headers, raw, reader)
        finally:
            self.in_flight -= 1

    async def _messages(self, method: str, path: str, headers: dict[str, str], raw: bytes,
                        reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        key = headers.get("x-api-key") or ""
        auth = headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        masked = {k: (MASK if k in AUTH_HEADERS else v) for k, v in headers.items()}
        seen = Seen(next(self._counter), method, path, masked, body, time.monotonic(), time.time(),
                    _fingerprint(key) if key else None)
        if key:
            self._fingerprints.add(seen.key_fingerprint or "")
        if self.record:
            with self._lock:
                self._seen.append(seen)
        rid = _id("req_")
        try:
            self._check(seen, key, raw)
            action = self._choose(seen)
        except _BadRequest as e:
            action = Fail(e.status, e.kind, e.message)
        except Exception as e:  # noqa: BLE001 - a broken rule: answer 500 and keep it for the test to see
            problem = f"test server rule failed: {type(e).__name__}: {e}"
            problem = problem.replace(key, MASK) if key else problem
            self.errors.append(problem)
            action = Fail(500, "api_error", problem, headers={"x-should-retry": "false"})
        usage, marks = None, []
        if isinstance(action, Reply) and seen.path == "/v1/messages":
            usage, marks = self._lookup(seen.body)  # the cache is looked up when the request arrives
            if self.cache_visible == "arrival":
                self._commit(marks)
                marks = []
        latency = self.latency(seen) if callable(self.latency) else self.latency
        delay = latency + getattr(action, "delay", 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        seen.client_gone = reader.at_eof()
        seen.answered = time.monotonic()
        if isinstance(action, Drop):
            seen.status = 0
            return 0, {}, b""
        base = {"content-type": "application/json", "request-id": rid,
                "anthropic-organization-id": "00000000-0000-4000-8000-000000000000"}
        if isinstance(action, Fail):
            def error(message: str) -> dict[str, Any]:
                return {"type": "error", "error": {"type": action.type, "message": message}, "request_id": rid}

            doc = error(action.message + (f" {key}" if action.echo_key else ""))
            seen.status = action.status  # what is kept never holds the key
            seen.response = error(action.message + (f" {MASK}" if action.echo_key else ""))
            return action.status, {**base, **self._limits(), **action.headers}, json.dumps(doc).encode()
        if path.endswith("/count_tokens"):
            u, _ = self._lookup(seen.body)
            doc = {"input_tokens": sum(u[k] for k in ("input_tokens", "cache_read_input_tokens",
                                                      "cache_creation_input_tokens"))}
        else:
            assert isinstance(action, Reply) and usage is not None
            doc = self._message(seen, action, usage)
            self._commit(marks)
        seen.status, seen.response = 200, doc
        return 200, {**base, **self._limits()}, json.dumps(doc).encode()

    def _limits(self) -> dict[str, str]:
        reset = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = {}
        for kind, limit in (("requests", 4000), ("tokens", 2_000_000), ("input-tokens", 2_000_000),
                            ("output-tokens", 400_000)):
            out[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(limit - 1)
            out[f"anthropic-ratelimit-{kind}-reset"] = reset
        return out

    def _check(self, seen: Seen, key: str, raw: bytes) -> None:
        """The request checks of the real API that a client most often fails."""
        if not seen.path.startswith("/v1/messages") or seen.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            raise _BadRequest(404, "not_found_error", f"Not Found: {seen.path}")
        if seen.method != "POST":
            raise _BadRequest(405, "invalid_request_error", f"Method {seen.method} not allowed")
        if not key:
            raise _BadRequest(401, "authentication_error", "x-api-key header is required")
        if self._expected and seen.key_fingerprint != self._expected:
            raise _BadRequest(401, "authentication_error", "invalid x-api-key")
        if not seen.headers.get("anthropic-version"):
            raise _BadRequest(400, "invalid_request_error", "anthropic-version: header is required")
        b = seen.body
        if not isinstance(b, dict):
            raise _BadRequest(400, "invalid_request_error", "The request body is not valid JSON." if raw else
                              "request body is required")
        for k in sorted(b):
            if k not in TOP_LEVEL:
                raise _BadRequest(400, "invalid_request_error", f"{k}: Extra inputs are not permitted")
        if not isinstance(b.get("model"), str) or not b["model"]:
            raise _BadRequest(400, "invalid_request_error", "model: Field required")
        counting = seen.path.endswith("/count_tokens")
        if not counting:
            mt = b.get("max_tokens")
            if not isinstance(mt, int) or isinstance(mt, bool):
                raise _BadRequest(400, "invalid_request_error", "max_tokens: Field required")
            if mt < 1 or mt > MAX_OUTPUT_TOKENS:
                raise _BadRequest(400, "invalid_request_error",
                                  f"max_tokens: {mt} is out of range for model {b['model']} (1..{MAX_OUTPUT_TOKENS})")
        if b.get("stream"):
            raise _BadRequest(400, "invalid_request_error", "stream: this test server does not stream")
        msgs = b.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise _BadRequest(400, "invalid_request_error", "messages: at least one message is required")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise _BadRequest(400, "invalid_request_error",
                                  f"messages.{i}.role: Input should be 'user' or 'assistant'")
            c = m.get("content")
            if c == "" or c == [] or c is None:
                raise _BadRequest(400, "invalid_request_error",
                                  f"messages.{i}: all messages must have non-empty content")
            for j, blk in enumerate(c if isinstance(c, list) else []):
                if isinstance(blk, dict) and blk.get("type") == "text" and not blk.get("text"):
                    raise _BadRequest(400, "invalid_request_error",
                                      f"messages.{i}.content.{j}.text: text content blocks must be non-empty")
        if msgs[0].get("role") != "user":
            raise _BadRequest(400, "invalid_request_error", "messages: first message must use the \"user\" role")
        system = b.get("system")
        if system is not None:
            if isinstance(system, list):
                for i, blk in enumerate(system):
                    if not isinstance(blk, dict) or blk.get("type") != "text":
                        raise _BadRequest(400, "invalid_request_error", f"system.{i}.type: Input should be 'text'")
                    if not isinstance(blk.get("text"), str) or not blk["text"]:
                        raise _BadRequest(400, "invalid_request_error",
                                          f"system.{i}.text: text content blocks must be non-empty")
            elif not isinstance(system, str):
                raise _BadRequest(400, "invalid_request_error", "system: Input should be a valid string or list")
        tools = b.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                raise _BadRequest(400, "invalid_request_error", "tools: Input should be a valid list")
            names = set()
            for i, t in enumerate(tools):
                if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not TOOL_NAME.match(t["name"]):
                    raise _BadRequest(400, "invalid_request_error",
                                      f"tools.{i}.custom.name: String should match pattern '{TOOL_NAME.pattern}'")
                if t["name"] in names:
                    raise _BadRequest(400, "invalid_request_error", "tools: Tool names must be unique.")
                names.add(t["name"])
                schema = t.get("input_schema")
                if "type" not in t or t.get("type") == "custom":
                    if not isinstance(schema, dict) or schema.get("type") != "object":
                        raise _BadRequest(400, "invalid_request_error",
                                          f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        meta = b.get("metadata")
        if meta is not None:
            if not isinstance(meta, dict) or set(meta) - {"user_id"}:
                raise _BadRequest(400, "invalid_request_error", "metadata: only user_id is permitted")
            uid = meta.get("user_id")
            if uid is not None and (not isinstance(uid, str) or len(uid) > 256):
                raise _BadRequest(400, "invalid_request_error",
                                  "metadata.user_id: String should have at most 256 characters")
        found = len(_breakpoints(b))
        if found > MAX_BREAKPOINTS:
            raise _BadRequest(400, "invalid_request_error", f"A maximum of {MAX_BREAKPOINTS} blocks with "
                              f"cache_control may be provided. Found {found}.")

    def _choose(self, seen: Seen) -> Action:
        agent = seen.agent
        with self._lock:
            for who in dict.fromkeys((agent, None)):  # the agent's queue, then anyone's
                q = self._queues.get(who)
                if q:
                    return q.popleft()
            rules = [*(self._rules.get(agent, []) if agent is not None else []), *self._rules.get(None, [])]
        for r in rules:
            action = r(seen) if callable(r) else r
            if action is not None:
                return action
        return Reply()

    def _message(self, seen: Seen, action: Reply, usage: dict[str, Any]) -> dict[str, Any]:
        content = action.content if action.content is not None else self.default(seen)
        content = [dict(blk, id=blk.get("id") or _id("toolu_")) if blk.get("type") == "tool_use" else blk
                   for blk in content]
        usage["output_tokens"] = min(tokens(content) + 8, seen.body["max_tokens"])
        usage.update(action.usage or {})
        stop = action.stop_reason or ("tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn")
        model = action.model or self.model_ids.get(seen.body["model"], seen.body["model"])
        return {"id": _id("msg_"), "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}

    def _lookup(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, float]]]:
        """Input tokens split into cache reads, cache writes and the rest; the entries to write."""
        now = time.monotonic()
        digest = hashlib.sha256(str(body.get("model", "")).encode())
        total = 0
        marks: list[tuple[int, str, float]] = []  # (tokens up to here, prefix digest, ttl) per breakpoint
        for b in _blocks(body):
            bare = {k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b
            canon = json.dumps(bare, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            digest.update(canon.encode())
            total += tokens(canon)
            cc = b.get("cache_control") if isinstance(b, dict) else None
            if isinstance(cc, dict) and total >= self.min_cache_tokens:
                marks.append((total, digest.hexdigest(), 3600.0 if cc.get("ttl") == "1h" else 300.0))
        with self._lock:
            read = max((t for t, d, _ in marks if self._cache.get(d, 0.0) > now), default=0)
        write = max((t for t, _, _ in marks), default=0) - read
        usage = {"input_tokens": total - read - write, "cache_creation_input_tokens": write,
                 "cache_read_input_tokens": read,
                 "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
                 "output_tokens": 0, "service_tier": "standard"}
        return usage, [(d, ttl) for t, d, ttl in marks if t > read]

    def _commit(self, marks: list[tuple[str, float]]) -> None:
        now = time.monotonic()
        with self._lock:
            for d, ttl in marks:
                self._cache[d] = max(self._cache.get(d, 0.0), now + ttl)


def _blocks(body: dict[str, Any]) -> Iterator[Any]:
    """Every cacheable unit in prompt order: tools, system blocks, message content blocks."""
    yield from body.get("tools") or []
    s = body.get("system")
    if isinstance(s, list):
        yield from s
    elif isinstance(s, str):
        yield {"type": "text", "text": s}
    for m in body.get("messages") or []:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list):
            yield from c
        elif c is not None:
            yield {"type": "text", "text": c, "role": m.get("role")}


def _breakpoints(body: dict[str, Any]) -> list[Any]:
    return [b for b in _blocks(body) if isinstance(b, dict) and b.get("cache_control")]


# -- pytest and command line -----------------------------------------------

try:
    import pytest

    @pytest.fixture
    def anthropic_api() -> Iterator[AnthropicAPI]:
        """A fresh server per test, stopped when the test ends."""
        with AnthropicAPI() as api:
            yield api
except ImportError:  # pragma: no cover - the server also runs without pytest
    pass


@contextlib.contextmanager
def spawn(*args: str, timeout: float = 10.0) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The server in its own process (``args``: command-line flags); yields (url, process)."""
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.anthropic_api", *args],
                            stdout=subprocess.PIPE, text=True, cwd=repo)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ANTHROPIC_BASE_URL="):
            raise RuntimeError("the test Anthropic server did not start")
        yield line.strip().split("=", 1)[1], proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A local Anthropic Messages API for tests.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    p.add_argument("--min-cache-tokens", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    api = AnthropicAPI(latency=a.latency, min_cache_tokens=a.min_cache_tokens, seed=a.seed, record=False, port=a.port)
    api.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ANTHROPIC_BASE_URL={api.url}", flush=True)
    stop.wait()
    api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
