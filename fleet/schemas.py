"""JSON Schema (Draft 2020-12) validators, compiled once and reused.

Protocol schemas (delta, config, fleet document, conflict) come with the
package: they are what this version of fleet accepts. World schemas (one per
collection) come from the fleet repository's ``schemas/`` on main, so a merge
and its replay validate against the same bytes.

jsonschema_rs is imported when a schema is first compiled, not with this
module: a command whose records are all checked already (a task claim reads
the queue from its cache and the config's check from fleet.config's) never
loads it.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any

from fleet import canonical
from fleet.errors import FleetError
from fleet.ids import ID_PATTERN, NAME_RULE, printable
from fleet.template import protocol_schema_dir

Validator = Any  # jsonschema_rs validators share no public base class


def compile_schema(schema: Any, where: str) -> Validator:
    if not isinstance(schema, dict):
        raise FleetError(f"{where}: a schema must be a JSON object")
    import jsonschema_rs  # here, not at the top: see the module's docstring

    outside = _outside_ref(schema)
    if outside is not None:  # refused by name, before the library tries to resolve it
        raise FleetError(f"{where}: not a usable JSON Schema: {_outside(outside)}")
    try:
        # an empty registry: a "$schema" the library does not know is refused, never fetched or read from disk
        jsonschema_rs.meta.validate(schema, registry=jsonschema_rs.Registry([]))
    except jsonschema_rs.ValidationError as e:
        at = "/" + "/".join(str(p) for p in e.instance_path)
        raise FleetError(f"{where}: not a valid JSON Schema: at {at}: {e.message}") from None
    except jsonschema_rs.ReferencingError:
        raise FleetError(f"{where}: not a usable JSON Schema: \"$schema\" {printable(repr(schema.get('$schema')), 200)} "
                         "is no JSON Schema draft fleet knows; fleet fetches no meta-schema (leave it out, or name "
                         "https://json-schema.org/draft/2020-12/schema)") from None
    except ValueError as e:
        raise FleetError(f"{where}: not a usable JSON Schema: {_first_line(str(e))}") from None
    try:
        return jsonschema_rs.validator_for(schema, retriever=_no_retrieval)
    except (ValueError, jsonschema_rs.ReferencingError) as e:
        raise FleetError(f"{where}: not a usable JSON Schema: {_first_line(str(e))}") from None


def _no_retrieval(uri: str) -> Any:
    """A schema's $ref never leaves the schema: a file or a URL would make a
    merge depend on the machine it runs on (or hang on a server, or read
    /dev/zero), and replay on another machine could disagree. (The check
    before compiling refuses such a $ref by name; this is the library's
    last word, should it find another way out.)"""
    raise ValueError(_outside(uri))


def _outside(uri: str) -> str:
    return f"$ref {printable(repr(uri), 200)} points outside the schema; fleet resolves only references within it (#/...)"


_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
_INSTANCE_KEYWORDS = frozenset(["enum", "const", "default", "examples"])  # values, not schemas: a "$ref" there is data


def _outside_ref(schema: Any) -> str | None:
    """The first reference in ``schema`` that is not a fragment of the schema
    itself ('#...'), or None. A relative one ('other.json') would be resolved
    against a base the library makes up, then looked for on disk or online."""
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in _REF_KEYWORDS and isinstance(value, str) and not value.startswith("#"):
                    return value
                if key not in _INSTANCE_KEYWORDS:
                    todo.append(value)
    return None


def pointer(root: Any, ref: str) -> Any:
    """What a '#/a/b' reference within ``root`` points at, or None (a JSON pointer:
    '~1' is '/', '~0' is '~', percent-escapes decoded)."""
    from urllib.parse import unquote

    if ref != "#" and not ref.startswith("#/"):
        return None  # another document, or an anchor
    target = root
    for raw in unquote(ref[1:]).split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and key in target:
            target = target[key]
        elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        else:
            return None
    return target


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown reason"


@lru_cache(maxsize=256)
def compile_bytes(data: bytes, where: str) -> Validator:
    """Compile a schema file's bytes; cached by content."""
    return compile_schema(canonical.load(data, where), where)


@lru_cache(maxsize=256)
def integer_places(data: bytes, where: str) -> _Plan | None:
    """Where a schema file declares integers (see ProtocolValidator); cached by content."""
    schema = canonical.load(data, where)
    return _integer_plan(schema, schema, frozenset()) if isinstance(schema, dict) else None


def float_at_integer(plan: _Plan | None, instance: Any) -> str | None:
    """'at /path: 2.0 is not an integer ...' where ``instance`` holds a float the plan
    declares an integer, or None. JSON Schema counts 2.0 as an integer; a counter that
    became 2.0 loses increments past 2**53 and is written as 2.0 from then on."""
    at = _float_at(plan, instance, ())
    if at is None:
        return None
    from fleet.ids import printable

    return (f"at {printable('/' + '/'.join(str(p) for p in at), 200)}: {_dig(instance, at)!r} is not an integer "
            "in the JSON text (an integer field takes whole numbers, written without a fraction)")


class ProtocolValidator:
    """A validator of one of fleet's own formats, stricter than JSON Schema in one
    way: where the schema says ``integer``, the JSON text must hold an integer.
    JSON Schema counts ``2.0`` as an integer; fleet's records put ticks in paths
    and sum token counts, so ``2.0`` there is refused."""

    def __init__(self, schema: dict[str, Any], where: str) -> None:
        self.schema = schema
        self.inner = compile_schema(schema, where)
        self.integers = _integer_plan(schema, schema, frozenset())
        self._paths = _flat(self.integers, ())

    def is_valid(self, instance: Any) -> bool:
        return self.inner.is_valid(instance) and self._float_at(instance) is None

    def iter_errors(self, instance: Any) -> Any:
        yield from self.inner.iter_errors(instance)
        at = self._float_at(instance)
        if at is not None:
            yield _IntegerError(list(at), f"{_dig(instance, at)!r} is not an integer in the JSON text (write it without a fraction)")


    def _float_at(self, instance: Any) -> tuple[Any, ...] | None:
        if self._paths is None:
            return _float_at(self.integers, instance, ())
        for path in self._paths:  # a delta has five such places: look there, walk nothing
            value = instance
            for key in path:
                value = value.get(key) if type(value) is dict else None
            if type(value) is float:
                return path
        return None


def _flat(plan: _Plan | None, at: tuple[str, ...]) -> list[tuple[str, ...]] | None:
    """The places a plan names, if it names them by keys alone (no arrays, no
    additionalProperties); None otherwise."""
    if plan is None:
        return []
    here, props, items, addl = plan
    if items is not None or addl is not None:
        return None
    out = [at] if here else []
    for key, sub in props.items():
        below = _flat(sub, (*at, key))
        if below is None:
            return None
        out += below
    return out


class _IntegerError:
    def __init__(self, instance_path: list[Any], message: str) -> None:
        self.instance_path, self.message = instance_path, message


def _dig(instance: Any, at: tuple[Any, ...]) -> Any:
    for key in at:
        instance = instance[key]
    return instance


# A plan is where integers are declared: (is an integer here, properties, items,
# additionalProperties), each part None when no integer lies beneath.
_Plan = tuple[bool, dict[str, Any], Any, Any]


def _integer_plan(schema: Any, root: dict[str, Any], seen: frozenset[str]) -> _Plan | None:
    if not isinstance(schema, dict):
        return None
    here = False
    props: dict[str, Any] = {}
    items = addl = None
    parts: list[_Plan | None] = []
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and ref not in seen:
        parts.append(_integer_plan(pointer(root, ref), root, seen | {ref}))
    for key in ("allOf", "anyOf", "oneOf"):
        parts += [_integer_plan(sub, root, seen) for sub in schema.get(key, [])]
    parts += [_integer_plan(schema.get(k), root, seen) for k in ("then", "else")]
    kind = schema.get("type")
    if kind == "integer" or (isinstance(kind, list) and "integer" in kind and "number" not in kind):
        here = True
    for name, sub in (schema.get("properties") or {}).items():
        plan = _integer_plan(sub, root, seen)
        if plan:
            props[name] = plan
    items = _integer_plan(schema.get("items"), root, seen)
    addl = _integer_plan(schema.get("additionalProperties"), root, seen)
    for p in parts:
        if p:
            here = here or p[0]
            for name, sub in p[1].items():
                props[name] = _join(props.get(name), sub)
            items, addl = _join(items, p[2]), _join(addl, p[3])
    if not here and not props and items is None and addl is None:
        return None
    return (here, props, items, addl)


def _join(a: _Plan | None, b: _Plan | None) -> _Plan | None:
    if a is None or b is None:
        return a or b
    props = dict(a[1])
    for name, sub in b[1].items():
        props[name] = _join(props.get(name), sub)
    return (a[0] or b[0], props, _join(a[2], b[2]), _join(a[3], b[3]))


def _float_at(plan: _Plan | None, instance: Any, at: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Where a float stands that the schema declares an integer, or None."""
    if plan is None:
        return None
    here, props, items, addl = plan
    if here and type(instance) is float:
        return at
    if type(instance) is dict:
        pairs = instance.items() if addl is not None else [(k, instance[k]) for k in props if k in instance]
        for key, value in pairs:
            sub = props.get(key, addl)
            if sub is not None:
                found = _float_at(sub, value, (*at, key))
                if found is not None:
                    return found
    elif type(instance) is list and items is not None:
        for n, value in enumerate(instance):
            found = _float_at(items, value, (*at, n))
            if found is not None:
                return found
    return None


# The patterns of fleet's own schemas a person meets in an error (a name, a policy's
# key in state/config.json), each as its rule in words.
POLICY_KEY_PATTERN = r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]*/(\*|[^/]+))$"  # schemas/config.schema.json, policies
PATTERN_WORDS = {
    ID_PATTERN: f"the rule of a name ({NAME_RULE})",
    POLICY_KEY_PATTERN: "the rule of a policy's key ('*', '<collection>/*' or '<collection>/<field>', a field "
                        "path dotted, as in 'cards/meta.title', never with '/')",
}


@cache
def protocol(name: str) -> ProtocolValidator:
    """The validator of one of fleet's own formats, e.g. ``"delta"``."""
    where = f"schemas/{name}.schema.json"
    schema = canonical.load((protocol_schema_dir() / f"{name}.schema.json").read_bytes(), where)
    return ProtocolValidator(schema, where)


_LONG_NUMBER = re.compile(r"(?<![\w.\"])-?\d{25,}(?:\.\d+)?(?![\w\"])")


def _short_number(m: re.Match[str]) -> str:
    try:
        return f"{float(m.group()):.6g}"
    except OverflowError:
        return f"{m.group()[:8]}...({len(m.group().lstrip('-'))} digits)"


def _alternatives(err: Any) -> str | None:
    """For a value that fits none of anyOf's or oneOf's forms, what each form asked
    (jsonschema's own words say only "not valid under any of the schemas listed")."""
    import jsonschema_rs

    kinds = jsonschema_rs.ValidationErrorKind
    if not isinstance(getattr(err, "kind", None), (kinds.AnyOf, kinds.OneOfNotValid)):
        return None
    forms = [errs[0] for errs in (getattr(err.kind, "context", None) or []) if errs]
    if not forms:
        return None
    asked = []
    for e in forms:
        below = "/".join(str(p) for p in list(e.instance_path)[len(list(err.instance_path)):])
        asked.append(f"at /{below}: {e.message}" if below else e.message)
    shown = canonical.dumps(err.instance).decode("utf-8", "replace").strip() if _dumpable(err.instance) else "the value"
    shown = shown if len(shown) <= 60 else shown[:50] + " …"
    return f"{shown} fits none of the {len(forms)} forms allowed here: " + "; or ".join(asked)


def _dumpable(value: Any) -> bool:
    try:
        canonical.dumps(value)
    except Exception:  # a number canonical JSON refuses, say: the words go without it
        return False
    return True


def first_error(validator: Validator, instance: Any) -> str | None:
    """``None`` if valid, else the first error as 'at /path: message'."""
    if validator.is_valid(instance):
        return None
    err = next(iter(validator.iter_errors(instance)))
    from fleet.ids import printable  # a value quoted in the message is hostile text: no bidi, no control byte

    where = printable("/" + "/".join(str(p) for p in err.instance_path), 200)
    message = _alternatives(err) or err.message
    for pattern, words in PATTERN_WORDS.items():  # a rule in words, not a regular expression
        message = message.replace(f'"{pattern}"', words)
    message = _LONG_NUMBER.sub(_short_number, message)  # 1e308 read as an integer: 309 digits
    message = message if len(message) <= 300 else message[:200] + " … " + message[-80:]
    return f"at {where}: {printable(message, 400)}"
