"""Reading the state of one commit: documents, config, schemas and the ledger.

A :class:`Snapshot` is a read-only view of the files under ``state/`` and
``schemas/`` at one commit. :class:`GitSnapshot` reads them from git objects
(no working tree); :class:`MemorySnapshot` holds them in a dict, for replay
checks and property tests.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from fleet import canonical, schemas
from fleet import config as config_mod
from fleet.config import CONFIG_PATH, FLEET_PATH, Config
from fleet.errors import FleetError
from fleet.git import CatFile, Git

LEDGER_DIR = "state/ledger"
QUARANTINE_DIR = "state/quarantine"
CONFLICT_DIR = "state/conflicts"
ENGINE_DIRS = (LEDGER_DIR, QUARANTINE_DIR, CONFLICT_DIR)


class Snapshot:
    """Files under state/ and schemas/ at one point in history."""

    def paths(self) -> Iterable[str]:
        raise NotImplementedError

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        raise NotImplementedError

    def read(self, path: str) -> bytes | None:
        return self.read_many([path])[path]

    def under(self, folder: str) -> list[str]:
        prefix = folder.rstrip("/") + "/"
        return sorted(p for p in self.paths() if p.startswith(prefix))

    def files_in(self, folder: str) -> list[str]:
        """The paths directly in ``folder`` (not in a folder of it), sorted: found by
        bisection past each folder in it, not by a look at every path below it (a
        worker asks for state/'s own files, beside 86,000 documents at bigworld's size)."""
        paths = self.under(folder)
        start = len(folder.rstrip("/")) + 1
        out: list[str] = []
        i = 0
        while i < len(paths):
            p = paths[i]
            slash = p.find("/", start)
            if slash < 0:
                out.append(p)
                i += 1
            else:  # every path in that folder sorts before its name with "/" turned into "0"
                i = bisect.bisect_left(paths, p[:slash] + "0", i + 1)
        return out

    # -- what every merge needs --------------------------------------
    @cached_property
    def config(self) -> Config:
        data = self.read(CONFIG_PATH)
        if data is None:
            raise FleetError(f"{CONFIG_PATH}: missing; is this a fleet repository? (`fleet init DIR` makes one)")
        return config_mod.parse(data)

    @cached_property
    def fleet(self) -> dict[str, Any]:
        data = self.read(FLEET_PATH)
        if data is None:
            raise FleetError(f"{FLEET_PATH}: missing; is this a fleet repository?")
        doc = canonical.load(data, FLEET_PATH)
        problem = schemas.first_error(schemas.protocol("fleet"), doc)
        if problem:
            raise FleetError(f"{FLEET_PATH}: {problem} (schemas/fleet.schema.json)")
        return doc

    @property
    def tick(self) -> int:
        return int(self.fleet["tick"])

    def validator(self, collection: str) -> schemas.Validator:
        path, data = self._schema_of(collection)
        return schemas.compile_bytes(data, path)

    def integer_places(self, collection: str) -> Any:
        """Where the collection's schema declares integers (schemas.float_at_integer)."""
        path, data = self._schema_of(collection)
        return schemas.integer_places(data, path)

    def _schema_of(self, collection: str) -> tuple[str, bytes]:
        name = self.config.collections[collection].schema
        path = f"schemas/{name}"
        data = self.read(path)
        if data is None:
            raise FleetError(f"{CONFIG_PATH}: collections.{collection}.schema names {path}, which is missing or not a regular file")
        return path, data

    def ledger_ids(self, tick: int, worker: str) -> dict[str, str]:
        """Delta id -> digest of the deltas of (tick, worker) already applied."""
        data = self.read(f"{LEDGER_DIR}/{tick}/{worker}.jsonl")
        if not data:
            return {}
        out = {}
        for line in data.splitlines():
            body = canonical.parse_trusted(line)  # the ledger: lines the merge wrote
            out[body["id"]] = canonical.digest(body)
        return out


class GitSnapshot(Snapshot):
    _sorted: list[str] | None = None  # the paths, sorted once asked for (:meth:`under`)

    def __init__(self, git: Git, commit: str) -> None:
        self.git = git
        self.commit = commit
        self.links: set[str] = set()  # paths that are symbolic links (git mode 120000), not files
        self._entries = git.ls_tree(commit, "state/", "schemas/", links=self.links)
        self._cache: dict[str, bytes] = {}
        self._reader: CatFile | None = None

    def __enter__(self) -> GitSnapshot:
        """Within the block, reads go through one long-running ``cat-file``: for a
        reader that asks for a few documents at a time (a worker's view of main)."""
        self._reader = self.git.cat_file()
        return self

    def __exit__(self, *exc: object) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def paths(self) -> Iterable[str]:
        return self._entries.keys()

    def under(self, folder: str) -> list[str]:
        """As :meth:`Snapshot.under`, by bisection of the paths sorted once: a merge
        asks for several folders (resolutions, conflicts, the ledger) of a tree of
        86,000 files at bigworld's size, and each was a pass over every path."""
        if self._sorted is None:
            self._sorted = sorted(self._entries)
        prefix = folder.rstrip("/") + "/"
        # every path that starts with prefix, and no other, sorts from prefix to
        # prefix with its "/" turned into "0", the character after it
        return self._sorted[bisect.bisect_left(self._sorted, prefix):bisect.bisect_left(self._sorted, prefix[:-1] + "0")]

    def read(self, path: str) -> bytes | None:
        found = self._cache.get(path)  # a document's schema, asked for once per document read
        return found if found is not None else self.read_many([path])[path]

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        paths = list(paths)
        wanted = [self._entries[p] for p in paths if p in self._entries and p not in self._cache]
        if wanted:
            blobs = self._reader.read(wanted) if self._reader is not None else self.git.cat_blobs(wanted)
            for p in paths:
                sha = self._entries.get(p)
                if sha in blobs:
                    self._cache[p] = blobs[sha]
        return {p: self._cache.get(p) for p in paths}


class MemorySnapshot(Snapshot):
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)

    def paths(self) -> Iterable[str]:
        return self.files.keys()

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        return {p: self.files.get(p) for p in paths}

    def after(self, writes: dict[str, bytes], deletes: Iterable[str]) -> MemorySnapshot:
        """The snapshot a commit with these writes and deletes would have."""
        files = dict(self.files)
        for d in deletes:
            prefix = d.rstrip("/") + "/"
            files.pop(d, None)
            for p in [p for p in files if p.startswith(prefix)]:
                del files[p]
        files.update(writes)
        return MemorySnapshot(files)


class OverlaySnapshot(Snapshot):
    """Another snapshot with some files written and some removed, without copying it."""

    def __init__(self, base: Snapshot, writes: dict[str, bytes], deletes: Iterable[str]) -> None:
        self.base = base
        self.writes = dict(writes)
        self.deleted = set(deletes) - set(writes)

    def paths(self) -> Iterable[str]:
        return [p for p in self.base.paths() if p not in self.deleted] + [
            p for p in self.writes if p not in set(self.base.paths())]

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        paths = list(paths)
        below = self.base.read_many([p for p in paths if p not in self.writes and p not in self.deleted])
        return {p: self.writes[p] if p in self.writes else None if p in self.deleted else below[p] for p in paths}
