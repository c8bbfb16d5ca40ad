"""`fleet status`: the tick, workers' health, pending branches, open conflicts, tasks, usage,
what this UTC day and month spent against their budgets, and when the next tick is due.

It also names the commits of the last ``limits.window`` ticks that the merge
engine did not make and that changed state or schemas (``outside``), and
which of their changes are refused (see ``fleet.outside``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.ids import printable
from fleet.overview import overview
from fleet.records import Usage


def status(path: Path, remote: str | None = None) -> dict[str, Any]:
    """The status as data (``fleet.overview``), which the HTML report reads too."""
    return overview(path, remote)


# -- the command line --------------------------------------------------------
@click.command("status")
@dir_option
@json_option
@remote_option
def status_command(directory: Path, as_json: bool, remote: str | None) -> None:
    """The merged tick, workers' health, open conflicts, tasks by state, tokens and cost."""
    s = status(directory, remote)

    def text() -> None:
        age = f", merged {_ago(s['age_seconds'])} ago" if s["age_seconds"] is not None else ""
        click.echo(f"tick {s['tick']} (main {s['main'][:12]}{', remote ' + s['remote'] if s['remote'] else ''}{age})")
        p = s["provider"]
        click.echo(f"provider: {p['configured']} (run.provider)"
                   + (f"; the last tick ran {', '.join(p['last_tick'])}" if p["last_tick"] else ""))
        d, tot = s["deltas"], s["totals"]
        click.echo(f"last tick: {d['applied']} applied, {d['noop']} no-op"
                   + (f" ({d['failed']} of them failed turns)" if d.get("failed") else "") + f", {d['held']} held "
                   f"({d['conflicts']} conflict(s) opened or joined), {d['quarantined']} quarantined"
                   + (f", {d['resolved']} decision(s) applied" if d["resolved"] else "")
                   + f"; {_money(s['last'].get('usage'))}")
        click.echo(f"all ticks: {tot['applied']} deltas merged, {tot['quarantined']} quarantined, "
                   f"{tot['held']} conflict(s) held, {tot.get('resolved', 0)} decided; {_money(tot.get('usage'))}")
        u = tot.get("usage") or {}
        if u:
            click.echo(f"tokens: {u.get('input_tokens', 0)} in, {u.get('output_tokens', 0)} out; cost ${u.get('cost_usd', 0):.4f}")
        for name, key in (("today", "day"), ("this month", "month")):
            p = s["budgets"][key]
            notes = ([f"tick {p['uncounted']} spent an unknown amount"] if p["uncounted"] is not None else []) + (
                [f"no budgets.{key}"] if p["budget"] is None else [])
            line = f"{name}: {p['said']}" + (f" ({'; '.join(notes)})" if notes else "")
            if p["budget"] is not None and p["left"] is None:  # a tick of it cannot be counted: nor what is left
                line += f", so what is left of budgets.{key} cannot be counted"
            elif p["budget"] is not None:
                left = " and ".join(x for x in (f"${p['left']['usd']:.4f}" if p["left"]["usd"] is not None else "",
                                                f"{p['left']['tokens']:,} tokens" if p["left"]["tokens"] is not None
                                                else "") if x)
                line += f", {left} left of budgets.{key}" + (" (spent)" if p["spent"] else "")
            click.echo(line)
        c = s["clock"]
        click.echo(f"next tick: {c['why']}")
        click.echo(f"pending worker branches: {len(s['pending_branches'])}")
        for w in s["workers"]:
            last = w["last_delta"]
            line = f"worker {w['worker']}: {w['status']}, last tick {w['last_tick']}"
            if last:
                line += f", last delta {last['delta']} ({last['agent']}, {last['ops']} op(s), {last['utc']})"
            if w.get("heartbeat"):
                line += f", heartbeat {w['heartbeat']}"
            click.echo(line)
            if w["why"]:
                click.echo(f"  dead: {w['why']}")
            if w["last_error"]:
                e = w["last_error"]
                click.echo(f"  last error (tick {e['tick']}, {e['agent']}): {printable(e['error'], 200)}")
        t = s["tasks"]
        cooling = f", {t['cooling']} cooling down after a failure or a return" if t["cooling"] else ""
        cooling += f", {t['stranded']} slung to a name that may not claim" if t.get("stranded") else ""
        click.echo(f"tasks: {t['pending']} pending ({t['ready']} ready{cooling}), {t['in-progress']} in progress"
                   f"{' (' + str(t['expired']) + ' lease(s) expired: run fleet watchdog)' if t['expired'] else ''}, "
                   f"{t['done']} done, {t['failed']} failed")
        if s["escalated"]:
            shown = "; ".join(f"{e['id']} ({e['failures']} failures: {printable(e['error'] or 'no error recorded', 80)})"
                              for e in s["escalated"][:5])
            more = f"; and {len(s['escalated']) - 5} more" if len(s["escalated"]) > 5 else ""
            click.echo(f"ESCALATED: {len(s['escalated'])} task(s) failed tasks.max_failures times and wait for a "
                       f"person: {shown}{more} (`fleet task reopen ID` gives one another go)")
        if s["open_conflicts"]:
            click.echo(f"open conflicts: {len(s['open_conflicts'])}, waiting for a person")
        for c in s["open_conflicts"]:
            click.echo(f"  conflict {c['id']}: {c['doc']} {c['path']} ({c['candidates']} candidates, since tick {c['opened_tick']})")
            for x in c["choices"]:
                what = printable(_value(x["value"]), 80) if "value" in x else f"{x['ops']} op(s)"
                click.echo(f"    {x['delta']} ({x['agent']}, tick {x['tick']}): {what}")
            if c["decided"]:
                click.echo("    decided: the next fleet merge applies it")
            else:
                pr = f"; or review {c['pr_url'] or 'the pull request on branch ' + c['pr_branch']}" if c["pr_branch"] else ""
                click.echo(f"    decide: {c['decide']} (or --choose base, or --value JSON){pr}")
        for d in s["pending_decisions"]:
            click.echo(f"waiting for the next merge: {d['what']} ({d['path']})")
        if s["recent_quarantine"]:
            click.echo(f"quarantined (last {len(s['recent_quarantine'])} in the ledger window):")
        for q in s["recent_quarantine"]:
            click.echo(f"  tick {q['tick']} {q['path']}: {printable(str(q['reason']), 300)}")
        if s["stalled"]:
            click.echo(f"warning: {s['stalled']}")
        hb = s["heartbeats"]
        if hb["error"]:
            click.echo(f"heartbeats: the message bus cannot be read: {hb['error']}")
        elif hb["who"]:
            click.echo("heartbeats: " + ", ".join(
                f"{w['name']} {w['status']} ({'last seen ' + w['last_seen'] if w['last_seen'] else 'never seen'})"
                for w in hb["who"]))
        for q in (hb.get("quarantined") or [])[:8]:  # a bad heartbeat file is named, never dropped unsaid
            said = q["reason"] if q["reason"].startswith(q["where"]) else f"{q['where']}: {q['reason']}"
            click.echo(f"heartbeat quarantined: {printable(said, 500)}")
        if len(hb.get("quarantined") or []) > 8:
            click.echo(f"heartbeat quarantined: and {len(hb['quarantined']) - 8} more (fleet status --json lists them)")
        for oc in s["outside"]:
            files = ", ".join(f"{c['how']} {c['path']}" for c in oc["changes"][:10])
            more = f", and {len(oc['changes']) - 10} more" if len(oc["changes"]) > 10 else ""
            click.echo(f"warning: commit {oc['commit'][:12]} by {oc['author']} ({oc['subject']!r}) changed state "
                       f"outside the merge engine: {files}{more}")
            for why in oc["refused"]:
                click.echo(f"warning: refused: {why}; fix or revert it on main (`fleet replay --check` fails until then)")
        click.echo("needs you: " + ("; ".join(s["needs_you"]) or "nothing"))
        f = s["fleet"]
        if f["carried"] is not None and not f["same"]:
            edited = " with source that differs from it" if f["carried"] == f["installed"] else ""
            click.echo(f"warning: this repository carries fleet {f['carried']} in {f['path']}, and fleet "
                       f"{f['installed']} is installed{edited}: the workflows run the carried one, `fleet` here "
                       "runs the installed one")
            if f["shadows"]:
                click.echo(f"warning: {f['path']} at the top shadows the installed fleet for `python -m fleet` run "
                           "here; move it to .github/actions/fleet/, where `fleet init` puts it now")

    emit(s, as_json, text)


def _ago(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _money(usage: Any) -> str:
    u = Usage.parse(usage)
    return f"{u.tokens:,} tokens, ${u.cost_usd:.4f}"


def _value(v: Any) -> str:
    import json

    return json.dumps(v, ensure_ascii=False, sort_keys=True)
