"""JSON Schema (Draft 2020-12) validators, compiled once and reused.

Protocol schemas (delta, config, fleet document, conflict) come with the
package: they are what this version of fleet accepts. World schemas (one per
collection) come from the fleet repository's ``schemas/`` on main, so a merge
and its replay validate against the same bytes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jsonschema_rs

from fleet import canonical
from fleet.errors import FleetError
from fleet.template import protocol_schema_dir

Validator = Any  # jsonschema_rs validators share no public base class


def compile_schema(schema: Any, where: str) -> Validator:
    if not isinstance(schema, dict):
        raise FleetError(f"{where}: a schema must be a JSON object")
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as e:
        at = "/" + "/".join(str(p) for p in e.instance_path)
        raise FleetError(f"{where}: not a valid JSON Schema: at {at}: {e.message}") from None
    except (ValueError, jsonschema_rs.ReferencingError) as e:
        raise FleetError(f"{where}: not a usable JSON Schema: {e}") from None
    try:
        return jsonschema_rs.validator_for(schema)
    except (ValueError, jsonschema_rs.ReferencingError) as e:
        raise FleetError(f"{where}: not a usable JSON Schema: {e}") from None


@lru_cache(maxsize=256)
def compile_bytes(data: bytes, where: str) -> Validator:
    """Compile a schema file's bytes; cached by content."""
    return compile_schema(canonical.load(data, where), where)


@lru_cache(maxsize=None)
def protocol(name: str) -> Validator:
    """The validator of one of fleet's own formats, e.g. ``"delta"``."""
    path = protocol_schema_dir() / f"{name}.schema.json"
    return compile_bytes(path.read_bytes(), f"schemas/{name}.schema.json")


def first_error(validator: Validator, instance: Any) -> str | None:
    """``None`` if valid, else the first error as 'at /path: message'."""
    if validator.is_valid(instance):
        return None
    err = next(iter(validator.iter_errors(instance)))
    where = "/" + "/".join(str(p) for p in err.instance_path)
    message = err.message if len(err.message) <= 300 else err.message[:200] + " … " + err.message[-80:]
    return f"at {where}: {message}"
