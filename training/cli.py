"""Running a training entry point as a program: a user's mistake is one line, a bug keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

# What this package raises for a wrong option, a missing file or unusable data: the message says what is wrong and
# what was expected, so the traceback would only bury it.
USER_ERRORS = (ValueError, FileNotFoundError)
USAGE_EXIT_STATUS = 2  # as argparse exits on a bad command line


def raised_by_us(error: BaseException) -> bool:
    """Whether ``error`` was raised by this package's code or the entry point itself (a check with its own message),
    not inside torch, transformers or datasets, where the same exception types mean a bug to be traced."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__", "") if frame is not None else ""
    return module == "__main__" or module.startswith("respstf.")


def run_cli(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """Call ``main(argv)``; on a user error raised by this package print ``<program>: error: <message>`` and exit with
    status 2. Any other exception keeps its traceback."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except USER_ERRORS as err:
        if not raised_by_us(err):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_STATUS) from None
