"""Running a training entry point as a program: a user's mistake is one line, a bug keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

# What the library raises for a wrong option, a missing file or unusable data: the message says what is wrong
# and what was expected, so the traceback would only bury it.
USER_ERRORS = (ValueError, FileNotFoundError)
USAGE_EXIT_STATUS = 2  # as argparse exits on a bad command line


def run_cli(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """Call ``main(argv)``; on a user error print ``<program>: error: <message>`` and exit with status 2."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except USER_ERRORS as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_STATUS) from None
