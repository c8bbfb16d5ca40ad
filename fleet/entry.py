"""The `fleet` console script and ``python -m fleet``: Ctrl-C while fleet starts
(importing click and the command line, a tenth of a second) ends as Ctrl-C does
later, ``fleet: interrupted`` and exit 130, never a traceback. Kept to the
standard library's ``sys`` so that little runs before the guard."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def main() -> None:
    try:
        from fleet.main import cli

        cli(prog_name="fleet", standalone_mode=True)
    except KeyboardInterrupt:  # before a command's own handler runs, or click's "Aborted!"
        sys.stderr.write("fleet: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
