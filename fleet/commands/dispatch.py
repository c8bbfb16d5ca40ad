"""`fleet dispatch`: pass a chain of dispatched runs on (the tick workflow's relay job).

A run whose tick is further away than a job may wait records a relay on
fleet/clock (``fleet plan --wait --relay N``, which answers ``"relay"``); this
command, in a job that holds only ``actions: write``, then dispatches the next
run of the workflow, which waits in turn. See ``fleet.dispatch``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli import MAX_COUNT, dir_option, emit, json_option, remote_option
from fleet.dispatch import Dispatch, parse_ticks, relay_run
from fleet.errors import EXIT_FAILURE, EXIT_NOTHING
from fleet.repo import FleetRepo


@click.command("dispatch")
@dir_option
@json_option
@remote_option
@click.option("--after", type=click.IntRange(0, MAX_COUNT), required=True, metavar="N",
              help="The tick whose merge started the chain (the plan's relay.after).")
@click.option("--relay", type=click.IntRange(1, MAX_COUNT), required=True, metavar="N",
              help="The relay the plan recorded (the plan's relay.relay): the next run gets it as its relay input.")
@click.option("--ticks-left", default=None, metavar="N",
              help="The ticks a chain started by hand still runs, passed on whole (empty: none).")
@click.option("--next-workers", default="", metavar="W", help="With --ticks-left: the next run's workers input.")
@click.option("--next-agents", default="", metavar="A,B", help="With --ticks-left: the next run's agents input.")
def dispatch_command(directory: Path, as_json: bool, remote: str | None, after: int, relay: int,
                     ticks_left: str | None, next_workers: str, next_agents: str) -> None:
    """Pass a chain of dispatched runs on: dispatch the next run of the tick workflow, which waits in turn.

    The workflow is GITHUB_WORKFLOW_REF's, else tick.yml on main. Exit 3 when
    the stop switch ends the chain, 1 when GitHub refuses."""
    d = Dispatch.from_env(what="fleet dispatch", ticks_left=parse_ticks(ticks_left), workers=next_workers.strip(),
                          agents=next_agents.strip())
    repo = FleetRepo(directory, remote)
    repo.fetch()
    cfg = repo.config()
    out = relay_run(cfg, after, relay, d)

    def text() -> None:
        if out["dispatched"]:
            inputs = ", ".join(f"{k}={v}" for k, v in sorted(out["inputs"].items()))
            click.echo(f"dispatched {out['workflow']} on {out['ref']} ({inputs}): {out['why']}")
        else:
            click.echo(f"not dispatched: {out['why']}")

    emit(out, as_json, text)
    if not out["dispatched"]:
        sys.exit(EXIT_FAILURE if "refused" in out["why"] else EXIT_NOTHING)
