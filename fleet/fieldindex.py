"""The field index: what a worker's prompt sorts and filters on, without every document.

A prompt section that orders a whole collection ("newest first") or filters it
("those of one author") needs one or two fields of every document to pick the few it
shows. Read from main, that is every document of the collection parsed. The
merge writes those fields instead, beside main: on the branch
``fleet/index/main``, one commit per main commit it publishes (pushed in the
same atomic push as main, never one without the other), holding

- ``describes.json``: ``{"format": 2, "main": <the main commit>, "fields":
  {<collection>: [<field>, ...]}, "orders": {<collection>: [<key>, ...]}}``, and
- ``<collection>.json`` for each collection named there: ``{"fields": [...],
  "rows": [[<id>, <value of each field>...], ...]}``, one row per document of
  the collection at that main commit, compact canonical JSON (a missing field
  is null: a prompt's sorts and filters treat both alike), in the order
  ``orders`` gives the collection (keys as a prompt section's ``order``, ties
  in id order), or in id order when it gives none.

Which fields: those the world's prompt sections order or filter a collection
by (:func:`fields_of`); which order: the first a section sorts the whole
collection in (:func:`orders_of`). Nothing here names a collection: the world
says which.

The order saves a worker the sort, not the check: a worker sorts the rows as
ever (Python's sort goes through rows already in order in one pass) and the
index is in doubt if they were not in the order it says.

A worker (fleet.world.View) uses an index only when it describes exactly the
main commit it works on, and reads the documents it finally shows by path and
checks them as ever, each against its row (a row that does not match throws
the index away). Anything else (no index, another main, a blob too big, JSON
not exactly as the merge writes it, a row of the wrong shape, ids that are not
the collection's files, rows not in the order said) is a doubt, and a doubt is the full read. So no prompt
depends on the index being there; it is data from a writer of the repository,
parsed strictly and within limits. The index is trusted as far as main is: the
merge writes both, and a worker checks every document it shows.

The branch keeps no history (each commit stands alone, the one before is
garbage once replaced), so it does not grow with the ticks; ``fleet validate``,
replay and the outside-change checks read main alone and never see it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from fleet import canonical
from fleet.config import Config
from fleet.git import Git
from fleet.ids import is_safe_id

BRANCH = "fleet/index/main"
FORMAT = 2  # 2: rows in the order describes.json says (1: in id order)
DESCRIBES = "describes.json"
MAX_DESCRIBES = 64 * 1024  # bytes
MAX_BLOB = 256 * 1024 * 1024  # bytes of one collection's rows
MAX_FIELDS = 32  # per collection
MAX_NAME = 200  # characters of a field's name
_SCALARS = (str, int, float, bool, type(None))


class Doubt(Exception):
    """The index cannot stand for main: read main itself. Its message says why."""


def fields_of(spec: Any, cfg: Config) -> dict[str, tuple[str, ...]]:
    """Collection -> the fields (sorted, without ``id``) that the prompt ``spec``'s
    sections order or filter the whole collection by: those a worker would
    otherwise read every document of the collection for."""
    out: dict[str, set[str]] = {}

    def where_fields(collection: str, where: Iterable[Any]) -> set[str]:
        found = set()
        for w in where:
            found.add(w.field)
            nested = getattr(w.value, "collection", None)
            if isinstance(nested, str):  # a Selection: its ids come from a filter of its own
                out.setdefault(nested, set()).update(where_fields(nested, w.value.where))
        return found

    for s in (*spec.shared, *spec.own):
        if s.collection is None or s.doc is not None:
            continue
        if not s.where and (not s.order or s.order[0].lstrip("-") == "id"):
            continue  # listed by id as far as its room goes (View.in_id_order): no index needed
        wanted = where_fields(s.collection, s.where) | {k.lstrip("-") for k in s.order}
        out.setdefault(s.collection, set()).update(wanted)
    return {c: tuple(sorted(f - {"id"})) for c, f in sorted(out.items())
            if c in cfg.collections and len(f - {"id"}) <= MAX_FIELDS}


def orders_of(spec: Any, cfg: Config) -> dict[str, tuple[str, ...]]:
    """Collection -> the order its rows are kept in: the first order (keys as a
    section's ``order``) that a section of ``spec`` sorts the whole collection
    in, for the collections :func:`fields_of` indexes; none, id order."""
    indexed = fields_of(spec, cfg)
    out: dict[str, tuple[str, ...]] = {}
    for s in (*spec.shared, *spec.own):
        if s.collection in indexed and s.doc is None and s.order and s.order[0].lstrip("-") != "id" \
                and s.collection not in out and {k.lstrip("-") for k in s.order} - {"id"} <= set(indexed[s.collection]):
            out[s.collection] = tuple(s.order)
    return out


# -- reading (a worker) ------------------------------------------------------------------
@dataclass
class Index:
    """An index that describes ``main``: its rows, read a collection at a time."""

    git: Git
    commit: str
    main: str
    fields: dict[str, tuple[str, ...]]
    blobs: dict[str, tuple[str, int]]  # collection -> (blob sha, size)
    orders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # collection -> the order its rows are in
    _rows: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _data: dict[str, bytes] = field(default_factory=dict)  # blobs read, not yet parsed

    def rows(self, collection: str, listing: dict[str, str]) -> dict[str, dict[str, Any]]:
        """id -> the document's id and indexed fields (null for a missing one),
        for every id of ``listing`` (the collection's files at main), or :class:`Doubt`."""
        found = self._rows.get(collection)
        if found is None:
            if not self._data:  # every collection's rows in one read: a worker's prompts sort or filter them all
                shas = sorted({sha for sha, _ in self.blobs.values()})
                self._data.update(self.git.cat_blobs(shas))
            sha, size = self.blobs[collection]
            data = self._data.get(sha)
            if data is None or len(data) != size:
                raise Doubt(f"{collection}.json could not be read")
            found = self._rows[collection] = parse_rows(data, self.fields[collection], collection,
                                                        in_id_order=collection not in self.orders)
            if self._rows.keys() >= self.blobs.keys():
                self._data.clear()  # every one parsed: the bytes are not needed again
        if found.keys() != listing.keys():
            raise Doubt(f"{collection}.json does not list the collection's documents at {self.main[:12]}")
        return found


def open_index(git: Git, ref: str, main: str) -> tuple[Index | None, str]:
    """(the index at ``ref`` if it describes ``main``, "") or (None, why not)."""
    try:
        return _open(git, ref, main), ""
    except Doubt as e:
        return None, str(e)


def _open(git: Git, ref: str, main: str | None) -> Index:
    """The index at ``ref`` if it describes ``main`` (None: whichever main it describes)."""
    commit = git.rev_parse(ref)
    if commit is None:
        raise Doubt(f"no {ref}")
    p = git.proc("ls-tree", "-l", "-z", commit)
    if p.returncode:
        raise Doubt(f"{ref} cannot be listed")
    entries: dict[str, tuple[str, int]] = {}
    for rec in p.stdout.split(b"\0"):
        if not rec:
            continue
        meta, _, name = rec.partition(b"\t")
        parts = meta.split()
        if len(parts) != 4 or parts[1] != b"blob" or not parts[3].isdigit():
            raise Doubt(f"{ref} holds something other than files")
        entries[name.decode(errors="replace")] = (parts[2].decode(), int(parts[3]))
    if DESCRIBES not in entries or entries[DESCRIBES][1] > MAX_DESCRIBES:
        raise Doubt(f"{ref} has no {DESCRIBES} (or one too big)")
    data = git.cat_blobs([entries[DESCRIBES][0]]).get(entries[DESCRIBES][0], b"")
    try:
        d = canonical.parse(data, max_depth=4)
    except canonical.JSONProblem as e:
        raise Doubt(f"{DESCRIBES}: {e}") from None
    if not isinstance(d, dict) or set(d) != {"format", "main", "fields", "orders"} or d["format"] != FORMAT:
        raise Doubt(f"{DESCRIBES} is not an index of format {FORMAT}")
    if not isinstance(d["main"], str) or (main is not None and d["main"] != main):
        raise Doubt(f"{DESCRIBES} describes main {str(d['main'])[:12]}, not {str(main)[:12]}")
    if not isinstance(d["fields"], dict) or not isinstance(d["orders"], dict):
        raise Doubt(f"{DESCRIBES}: fields or orders is not an object")
    fields: dict[str, tuple[str, ...]] = {}
    blobs: dict[str, tuple[str, int]] = {}
    for coll, names in d["fields"].items():
        if not is_safe_id(coll) or not _field_names(names):
            raise Doubt(f"{DESCRIBES}: fields.{str(coll)[:40]} is not a list of field names")
        entry = entries.get(f"{coll}.json")
        if entry is None or entry[1] > MAX_BLOB:
            raise Doubt(f"{coll}.json is missing or bigger than {MAX_BLOB} bytes")
        fields[coll], blobs[coll] = tuple(names), entry
    orders: dict[str, tuple[str, ...]] = {}
    for coll, keys in d["orders"].items():
        if coll not in fields or not _order_keys(keys, fields[coll]):
            raise Doubt(f"{DESCRIBES}: orders.{str(coll)[:40]} is not an order of the collection's fields")
        orders[coll] = tuple(keys)
    return Index(git, commit, d["main"], fields, blobs, orders)


def _field_names(names: Any) -> bool:
    return (isinstance(names, list) and len(names) <= MAX_FIELDS and names == sorted(set(names))
            and all(isinstance(n, str) and 0 < len(n) <= MAX_NAME and n != "id" for n in names))


def _order_keys(keys: Any, fields: tuple[str, ...]) -> bool:
    return (isinstance(keys, list) and 0 < len(keys) <= MAX_FIELDS
            and all(isinstance(k, str) and k.lstrip("-") in (*fields, "id") and k.count("-") <= 1 for k in keys)
            and len({k.lstrip("-") for k in keys}) == len(keys))


def parse_rows(data: bytes, fields: tuple[str, ...], collection: str,
               in_id_order: bool = True) -> dict[str, dict[str, Any]]:
    """A collection's rows as stubs (id -> {id, field: value}, in the rows' order),
    or :class:`Doubt`. The bytes must be exactly what :func:`rows_blob` writes:
    anything else is not the merge's, and is not read further. Rows kept in
    another order than id order (``in_id_order`` false) are checked for it by
    the reader that sorts them (fleet.world.View.ordered)."""
    rows = _row_lists(data, fields, collection)
    names = ("id", *fields)
    # a field that is null is as one that is missing, to a prompt
    out = {row[0]: dict(zip(names, row, strict=True)) for row in rows}
    if len(out) != len(rows):
        raise Doubt(f"{collection}.json: two rows of one id")
    if in_id_order and any(a[0] >= b[0] for a, b in zip(rows, rows[1:], strict=False)):
        raise Doubt(f"{collection}.json: a row is not [id, {', '.join(fields)}] in id order")
    return out


def _row_lists(data: bytes, fields: tuple[str, ...], collection: str) -> list[list[Any]]:
    """The rows of a rows file as written ([id, value...] each), or :class:`Doubt`."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Doubt(f"{collection}.json is not JSON") from None
    if (not isinstance(obj, dict) or set(obj) != {"fields", "rows"} or obj["fields"] != list(fields)
            or not isinstance(obj["rows"], list)):
        raise Doubt(f"{collection}.json is not the index of {list(fields)}")
    try:
        same = canonical.dumps_line(obj) == data
    except orjson.JSONEncodeError:
        same = False
    if not same:  # a duplicate key, a number orjson changed, another layout: not written by fleet
        raise Doubt(f"{collection}.json is not in canonical form")
    width = len(fields) + 1
    rows: list[list[Any]] = obj["rows"]
    # Every row is a list (checked below) and brings one "[" at least, the fields and the rows
    # one each, and the object the only "{": as many "[" as that, and no value is a list or an
    # object (a string holding a bracket only adds one, and is a doubt too: the full read).
    if data.count(b"[") != len(rows) + 2 or data.count(b"{") != 1:
        raise Doubt(f"{collection}.json: a value is not a string (without brackets), number, boolean or null")
    if not all(type(row) is list and len(row) == width and type(row[0]) is str for row in rows):
        raise Doubt(f"{collection}.json: a row is not [id, {', '.join(fields)}]")
    return rows


def same_fields(stub: dict[str, Any], doc: dict[str, Any], fields: tuple[str, ...]) -> bool:
    """Whether a document holds the values its row says (null for a missing field)."""
    for name in fields:
        a, b = stub.get(name), doc.get(name)
        if type(a) is not type(b) or a != b:
            return False
    return True


# -- writing (the merge) ---------------------------------------------------------------------
def rows_blob(fields: tuple[str, ...], rows: dict[str, list[Any]], order: tuple[str, ...] = ()) -> bytes:
    """The rows file: in ``order`` (as a prompt sorts them, ties in id order), else in id order."""
    return canonical.dumps_line({"fields": list(fields), "rows": _sorted_rows(fields, rows, order)})


class _TextDescending(Exception):
    pass


def _sorted_rows(fields: tuple[str, ...], rows: dict[str, list[Any]], order: tuple[str, ...]) -> list[list[Any]]:
    """[id, value...] of each row, in ``order`` as fleet.prompt.sort_documents puts
    documents (its key made of the row's values, then the id: ties in id order),
    else in id order. Rows that come in that order already (the index before, a
    few changed) cost one pass of the sort."""
    listed = [[i, *v] for i, v in rows.items()]
    if not order:
        listed.sort(key=itemgetter(0))
        return listed
    at = [(("id", *fields).index(k.lstrip("-")), k.startswith("-")) for k in order]

    def key(row: list[Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        for i, desc in at:  # as fleet.prompt._keys: numbers, then text, then anything else (missing) last
            v = row[i]
            t = type(v)
            if t is int or t is float:
                out.append((0, -v) if desc else (0, 0, v))
            elif t is str:
                if desc:
                    raise _TextDescending()
                out.append((0, 1, v))
            else:
                out.append((1,))
        out.append(row[0])
        return tuple(out)

    try:
        listed.sort(key=key)
        return listed
    except _TextDescending:  # text in descending order: no key turns it round, the sorts of a prompt do it
        from fleet.prompt import sort_documents

        names = ("id", *fields)
        stubs = [dict(zip(names, row, strict=True)) for row in listed]
        return [list(d.values()) for d in sort_documents(stubs, order)]


def build(git: Git, commit: str, cfg: Config, fields: dict[str, tuple[str, ...]],
          previous: str | None, orders: dict[str, tuple[str, ...]] | None = None,
          written: Mapping[str, bytes] | None = None) -> str:
    """The index commit of main ``commit``: from the index ``previous`` (a commit)
    and the documents that changed since the main it describes, or from every
    document of each indexed collection when it cannot be used. The same main
    and fields give the same files, whichever way they were come to. ``orders``
    (:func:`orders_of`): the order each collection's rows are kept in.

    A collection whose documents the index cannot stand for (a file not at its
    id's path, a document that is not an object of that id, a field holding a
    list or an object, or text with a bracket) is left out: workers read it in full.

    ``written``: path -> bytes the writer of ``commit`` just wrote (the merge's
    documents), taken for a changed file whose blob id they hash to instead of
    reading the blob back; any other file is read from git."""
    old: Index | None = None
    if previous is not None:
        try:
            old = _open(git, previous, None)
        except Doubt:
            old = None
    orders = orders or {}
    names_of = dict(fields)
    # From the rows before where they stand for the same fields: their changes since, in one diff
    reuse = [c for c, names in fields.items() if old is not None and old.fields.get(c) == names]
    before: dict[str, list[list[Any]]] = {}
    changed: dict[str, dict[str, str | None]] = {c: {} for c in fields}  # collection -> path -> blob (None: gone)
    if old is not None and reuse and _has_commit(git, old.main):
        p = git.proc("diff-tree", "-r", "-z", "--no-renames", old.main, commit, "--", *[f"state/{c}/" for c in reuse])
        data = git.cat_blobs(sorted({old.blobs[c][0] for c in reuse})) if p.returncode == 0 else {}
        for c in reuse:
            try:
                before[c] = _row_lists(data[old.blobs[c][0]], names_of[c], c)
            except (Doubt, KeyError):
                continue
        recs = p.stdout.split(b"\0") if p.returncode == 0 else []
        for meta, name in zip(recs[0::2], recs[1::2], strict=False):
            parts = meta.split()
            path = name.decode(errors="replace")
            coll = path.split("/", 2)[1] if path.count("/") >= 2 else ""
            if len(parts) >= 5 and coll in before:
                blob = parts[3].decode()
                changed[coll][path] = None if set(blob) == {"0"} else blob
    # the others from every document, listed in one go
    fresh = [c for c in fields if c not in before]
    if fresh:
        for path, sha in git.ls_tree(commit, *[f"state/{c}/" for c in fresh]).items():
            changed[path.split("/", 2)[1]][path] = sha
    blobs: dict[str, bytes] = {}
    wanted: set[str] = set()
    for c in fields:
        for path, oid in changed[c].items():
            if oid is None or not path.endswith(".json") or oid in blobs:
                continue
            mine = written.get(path) if written else None
            if mine is not None and blob_id(mine, len(oid)) == oid:
                blobs[oid] = mine
            else:
                wanted.add(oid)
    blobs.update(git.cat_blobs(sorted(wanted)))
    files: dict[str, bytes] = {}
    kept: dict[str, list[str]] = {}
    kept_orders: dict[str, list[str]] = {}
    for coll, names in fields.items():
        rows = _collection_rows(cfg, coll, names, before.get(coll), changed[coll], blobs)
        if rows is not None:
            order = orders.get(coll, ())
            if order and not _order_keys(list(order), names):
                order = ()
            files[f"{coll}.json"] = rows_blob(names, rows, order)
            kept[coll] = list(names)
            if order:
                kept_orders[coll] = list(order)
    files[DESCRIBES] = canonical.dumps({"format": FORMAT, "main": commit, "fields": kept, "orders": kept_orders})
    return git.write_commit(None, f"fleet: the field index of main {commit}\n", files, [], when=0)


def blob_id(data: bytes, width: int) -> str:
    """The id git gives a blob of ``data``: SHA-1, or SHA-256 for ids of 64 digits."""
    h = hashlib.sha256() if width == 64 else hashlib.sha1()  # noqa: S324 (git's object id, not a secret)
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def for_publish(git: Git, snap: Any, commit: str, index_ref: str,
                written: Mapping[str, bytes] | None = None) -> tuple[str, str | None] | None:
    """(the field index of main ``commit``, the index at ``index_ref`` it replaces)
    for a publish that moves main to push with it, built from the one before where
    it can be; None when the world's prompt (read from ``snap``, main before
    ``commit``) cannot be read, and workers then read main itself. The merge and
    ``fleet resolve``, every writer of main, publish through here. ``written``: as
    for :func:`build`."""
    from fleet import world
    from fleet.errors import FleetError

    try:
        world.warm(snap)
        spec = world.load(snap.config, snap.read).prompt
    except FleetError:
        return None
    old = git.rev_parse(index_ref)
    return (build(git, commit, snap.config, fields_of(spec, snap.config), old, orders_of(spec, snap.config), written),
            old)


def _collection_rows(cfg: Config, coll: str, names: tuple[str, ...], before: list[list[Any]] | None,
                     changed: dict[str, str | None], blobs: dict[str, bytes]) -> dict[str, list[Any]] | None:
    """id -> values of each document of ``coll``: the rows ``before`` (in their order)
    with the ``changed`` files applied, or (None before) from ``changed``, every file;
    None when a document cannot be a row (fleet.fieldindex.build)."""
    rows: dict[str, list[Any]] = {}
    if before is not None:
        rows = {row[0]: row[1:] for row in before}  # in their order: sorted again, they cost one pass
        if len(rows) != len(before):
            return None  # two rows of one id: not the merge's (the next build starts from every document)
    spec = cfg.collections[coll]
    for path, sha in changed.items():
        if not path.endswith(".json"):
            continue
        doc_id = path.rpartition("/")[2][:-5]
        if sha is None:
            rows.pop(doc_id, None)
            continue
        if path != spec.doc_path(doc_id):
            return None
        try:
            doc = canonical.parse_trusted(blobs[sha])
        except ValueError:
            return None
        if type(doc) is not dict or doc.get("id") != doc_id:
            return None
        values = [doc.get(n) for n in names]
        if not all(isinstance(v, _SCALARS) and not (isinstance(v, str) and ("[" in v or "{" in v)) for v in values):
            return None  # a list or an object, or text a reader could not tell from one (parse_rows)
        rows[doc_id] = values
    return rows


def _has_commit(git: Git, sha: str) -> bool:
    return git.proc("cat-file", "-e", f"{sha}^{{tree}}").returncode == 0
