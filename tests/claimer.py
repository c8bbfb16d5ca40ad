"""One claimer of tests/test_claim_contention.py: claims and completes tasks
on its own clone until the queue has nothing left, as an agent's loop would.

    python tests/claimer.py CLONE AGENT [--cli] [--lease S] [--hold-at S]

Prints one line per event, flushed, for the test to read:
``done ID FENCE``, ``dropped ID FENCE REASON`` (a complete that was refused:
the lease ran out and the task went back) and ``holding ID FENCE`` (with
``--hold-at S``: the first task it claims S seconds after it started, it holds
and stops, mid-task, to be killed) and ``retry WHAT REASON`` (a change that lost every race for
fleet's patience, or found the remote not answering, tried again). It exits 0 when every task in the queue is done.

``--cli`` drives ``python -m fleet task ...`` (a process per step, exit 3 when
nothing is ready, as a shell loop would); without it the library calls the
command line runs (``fleet.commands.task``), in one long-lived process.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

GAVE_UP = "gave up after"  # fleet's words when a change lost every race for its patience (120 s)
# git's and fleet's words when the remote did not answer at all: nothing was changed, and the
# same step is tried again, as an agent would (the test counts these: none is expected)
NO_ANSWER = ("Could not read from remote repository", "Connection reset by peer", "the remote did not answer within")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("clone", type=Path)
    p.add_argument("agent")
    p.add_argument("--cli", action="store_true")
    p.add_argument("--lease", type=float, default=None)
    p.add_argument("--hold-at", type=float, default=None)
    a = p.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks where it is, when a run does not end
    say = lambda *words: print(*words, flush=True)
    fleet = [sys.executable, "-m", "fleet"]
    lease = ["--lease", str(a.lease)] if a.lease else []

    from fleet.commands import task as task_cmd
    from fleet.errors import FleetError, NothingToDo
    from fleet.repo import FleetRepo
    from fleet.tasks import TaskQueue

    def claim() -> dict | None:
        """The task claimed, or None when nothing is ready."""
        while True:
            if a.cli:
                r = subprocess.run([*fleet, "task", "claim", "-C", str(a.clone), "--as", a.agent, "--json", *lease],
                                   capture_output=True, text=True)
                if r.returncode == 3:
                    return None
                if r.returncode == 0:
                    return json.loads(r.stdout)
                why = r.stderr.strip()
            else:
                try:
                    return task_cmd.claim(a.clone, a.agent, lease=a.lease)
                except NothingToDo:
                    return None
                except FleetError as e:
                    why = str(e)
            if GAVE_UP not in why and not any(n in why for n in NO_ANSWER):
                raise SystemExit(f"claim failed: {why}")
            say("retry", "claim", why.replace("\n", " "))  # lost every race for a while: nothing was claimed

    def complete(t: dict) -> str | None:
        """None when the task is done; fleet's reason when the complete was refused.
        A complete that lost every race for a while is tried again, as a holder
        should: it still holds the fence, and a retried complete that landed is no error."""
        result = json.dumps({"by": a.agent})
        while True:
            if a.cli:
                r = subprocess.run([*fleet, "task", "complete", t["id"], "-C", str(a.clone), "--fence",
                                    str(t["fence"]), "--as", a.agent, "--result", result], capture_output=True, text=True)
                why = (r.stderr.strip() or f"exit {r.returncode}") if r.returncode else None
            else:
                try:
                    task_cmd.complete(a.clone, t["id"], t["fence"], result=json.loads(result), agent=a.agent)
                    why = None
                except FleetError as e:
                    why = str(e)
            if why is None or (GAVE_UP not in why and not any(n in why for n in NO_ANSWER)):
                return why
            say("retry", t["id"], why.replace("\n", " "))

    started = time.monotonic()
    while True:
        t = claim()
        if t is None:
            q = TaskQueue(FleetRepo(a.clone)).read()  # as the claim just fetched it
            if q.tasks and all(x.status == "done" for x in q.tasks.values()):
                return 0
            time.sleep(random.uniform(0.2, 0.6))  # held by someone, or back from the watchdog soon
            continue
        if a.hold_at is not None and time.monotonic() - started >= a.hold_at:
            say("holding", t["id"], t["fence"])
            time.sleep(3600)  # mid-task: the test kills this process with SIGKILL
        why = complete(t)
        if why is None:
            say("done", t["id"], t["fence"])
        else:  # the lease ran out and the task went back: drop the result, as the refusal says
            say("dropped", t["id"], t["fence"], why.replace("\n", " "))


if __name__ == "__main__":
    sys.exit(main())
