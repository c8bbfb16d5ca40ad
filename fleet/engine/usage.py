"""Tokens and dollars: what the deltas of a tick spent, summed exactly."""

from __future__ import annotations

from typing import Any

_USAGE_INTS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def usage(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The usage of the deltas with these ``meta``s, summed."""
    total: dict[str, Any] = {k: 0 for k in _USAGE_INTS}
    micro = 0  # dollars summed as integer micro-dollars: exact in any order
    for meta in metas:
        u = meta.get("usage") or {} if isinstance(meta, dict) else {}
        for k in _USAGE_INTS:
            total[k] += u.get(k, 0)
        micro += round(u.get("cost_usd", 0) * 1_000_000)
    total["cost_usd"] = micro / 1_000_000
    return total


def add_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two usage figures added, dollars in exact micro-dollars."""
    out = {k: a.get(k, 0) + b.get(k, 0) for k in _USAGE_INTS}
    out["cost_usd"] = (round(a.get("cost_usd", 0) * 1_000_000) + round(b.get("cost_usd", 0) * 1_000_000)) / 1_000_000
    return out
