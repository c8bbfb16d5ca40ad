"""A schema a world holds never reaches outside itself (fleet.schemas.compile_schema).

Every place a fleet's files hold a schema (a tool's input, in state/tools.json
or inline in state/config.json; a collection's schema in schemas/) is given a
generated reference: to a file outside the fleet, to a local server that
records every request, relative to nowhere, or within the schema. One that
leaves the schema is refused in one line naming the file and the rule; no
request reaches the server and the outside file (a schema that would pass) is
never used. One within the schema works as before.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet.commands.init import init
from fleet.commands.validate import validate

RULE = "points outside the schema; fleet resolves only references within it (#/...)"
TOOLS = "state/tools.json"
CONFIG = "state/config.json"
SCHEMA = "schemas/post.schema.json"


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(self.path)
        body = b'{"type": "string"}'  # a schema that would pass, were it fetched
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], Path]:
    """A fleet on disk, its files as made, and a file outside it holding a schema that would pass."""
    root = tmp_path_factory.mktemp("refs")
    init(root / "fleet")
    outside = root / "outside.json"
    outside.write_text('{"type": "string"}')
    made = {rel: (root / "fleet" / rel).read_bytes() for rel in (TOOLS, CONFIG, SCHEMA)}
    return root / "fleet", made, outside


def _with_ref(schema: dict[str, Any], ref: str, place: str) -> None:
    schema.setdefault("$defs", {})["x"] = {"type": "string"}
    if place == "property":
        schema["properties"]["title"] = {"$ref": ref}
    elif place == "allOf":
        schema["properties"]["title"] = {"allOf": [{"type": "string"}, {"$ref": ref}]}
    else:  # a definition the schema refers to
        schema["$defs"]["y"] = {"$ref": ref}
        schema["properties"]["title"] = {"$ref": "#/$defs/y"}


def _place_ref(fleet_dir: Path, made: dict[str, bytes], where: str, ref: str, place: str) -> str:
    """Write the fleet with ``ref`` in the schema at ``where``; the file that holds it."""
    for rel, data in made.items():
        (fleet_dir / rel).write_bytes(data)
    if where == "schema":
        schema = json.loads(made[SCHEMA])
        _with_ref(schema, ref, place)
        (fleet_dir / SCHEMA).write_bytes(canonical.dumps(schema))
        return SCHEMA
    tools = json.loads(made[TOOLS])
    _with_ref(tools["post"]["input"], ref, place)
    if where == "tools file":
        (fleet_dir / TOOLS).write_bytes(canonical.dumps(tools))
        return TOOLS
    cfg = json.loads(made[CONFIG])
    cfg["tools"] = tools  # inline in the config
    (fleet_dir / CONFIG).write_bytes(canonical.dumps(cfg))
    (fleet_dir / TOOLS).unlink()
    return CONFIG


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["file", "http", "relative", "within", "nowhere within"]),
       name=st.from_regex(r"\A[a-z][a-z0-9_-]{0,12}\Z"),
       where=st.sampled_from(["tools file", "config", "schema"]),
       place=st.sampled_from(["property", "allOf", "definition"]))
def test_a_ref_that_leaves_the_schema_is_refused_in_every_place_a_schema_is_held(
        world_dir: tuple[Path, dict[str, bytes], Path], server: tuple[int, list[str]],
        kind: str, name: str, where: str, place: str) -> None:
    fleet_dir, made, outside = world_dir
    port, seen = server
    ref = {"file": outside.as_uri(), "http": f"http://127.0.0.1:{port}/{name}.json", "relative": f"{name}.json",
           "within": "#/$defs/x", "nowhere within": f"#/{name}"}[kind]
    file = _place_ref(fleet_dir, made, where, ref, place)
    _, problems, _ = validate(fleet_dir)
    lines = [str(p) for p in problems]
    assert seen == [], seen  # not one request, whatever the ref
    assert all("\n" not in line for line in lines), lines
    if kind == "within":
        assert lines == [], lines
        return
    assert lines, f"{ref!r} in {where} was taken"
    holder = [line for line in lines if line.startswith(f"{file}: ")]
    assert holder, lines  # the file that holds the schema is named
    if kind != "nowhere within":  # (a pointer to nothing is the library's word: it names the pointer)
        assert all(RULE in line for line in lines), lines  # documents of the collection say why they cannot be checked


def test_validate_says_which_tool_input_reaches_out_in_one_line(fleet: Fleet, tmp_path: Path,
                                                                server: tuple[int, list[str]]) -> None:
    port, seen = server
    outside = tmp_path / "outside.json"
    outside.write_text('{"type": "string"}')
    for ref in (outside.as_uri(), f"http://127.0.0.1:{port}/ext.json", "other.json"):
        tools = json.loads(fleet.read(TOOLS))
        tools["post"]["input"]["properties"]["title"] = {"$ref": ref}
        (fleet.path / TOOLS).write_bytes(canonical.dumps(tools))
        r = run(fleet, "validate", code=1)
        [line] = [x for x in r.output.splitlines() if "problem(s)" not in x]
        assert line == f"{TOOLS}: post.input: not a usable JSON Schema: $ref {ref!r} {RULE}", line
    assert seen == []


def test_a_ref_to_an_outside_file_never_opens_it(fleet: Fleet, tmp_path: Path) -> None:
    """The outside file is a FIFO whose writer notes when a reader opens it: a
    schema library that reads the file would be seen doing so."""
    fifo = tmp_path / "outside.json"
    os.mkfifo(fifo)
    opened: list[bool] = []

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # returns once someone opens the FIFO to read
        opened.append(True)
        os.write(fd, b'{"type": "string"}')
        os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    for rel in (TOOLS, SCHEMA):
        doc = json.loads(fleet.read(rel))
        (doc["post"]["input"] if rel == TOOLS else doc)["properties"]["title"] = {"$ref": fifo.as_uri()}
        (fleet.path / rel).write_bytes(canonical.dumps(doc))
    r = run(fleet, "validate", code=1)
    assert f"{TOOLS}: post.input: not a usable JSON Schema: $ref {fifo.as_uri()!r} {RULE}" in r.output
    assert f"{SCHEMA}: not a usable JSON Schema: $ref {fifo.as_uri()!r} {RULE}" in r.output
    assert opened == []
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # let the writer go
    thread.join(10)
    os.close(fd)


def test_a_schema_naming_an_unknown_meta_schema_is_refused_never_fetched(
        fleet: Fleet, tmp_path: Path, server: tuple[int, list[str]]) -> None:
    port, seen = server
    outside = tmp_path / "meta.json"
    outside.write_text('{"type": "object"}')
    for meta in (f"http://127.0.0.1:{port}/meta.json", outside.as_uri()):
        schema = json.loads(fleet.read(SCHEMA))
        schema["$schema"] = meta
        (fleet.path / SCHEMA).write_bytes(canonical.dumps(schema))
        r = run(fleet, "validate", "schemas", code=1)
        assert f"{SCHEMA}: not a usable JSON Schema: \"$schema\" {meta!r} is no JSON Schema draft fleet knows" in r.output
    assert seen == []
