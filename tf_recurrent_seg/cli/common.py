"""What every absl entry point of the package shares: flags defined late, and errors as one line."""

import pickle
import sys
from collections.abc import Callable

from absl import app, flags

# What a user can cause and fix (a bad flag, a missing or refused file, input the model cannot take): these end
# the program with one line on stderr and exit status 1. Anything else is a bug and keeps its traceback.
USER_ERRORS = (
    app.UsageError,
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    pickle.UnpicklingError,
)


def one_line_errors(main: Callable) -> Callable:
    """Wraps an absl `main` so that a `USER_ERRORS` exception prints `error: <message>` alone (absl would print
    the whole module docstring before a UsageError, and a traceback for the rest) and exits with status 1.
    """

    def wrapped(argv):
        try:
            return main(argv)
        except USER_ERRORS as error:
            message = " ".join(str(error).split()) or type(error).__name__
            sys.stderr.write(f"error: {message}\n")
            sys.exit(1)

    return wrapped


def run_main(main: Callable) -> None:
    """`app.run(main)` with `one_line_errors`, for entry points whose flags are defined at import."""
    app.run(one_line_errors(main))


def run_app(define_flags: Callable[[flags.FlagValues], None], main: Callable) -> None:
    """Defines the program's flags (only now, so importing its module defines none) and runs `main`.

    `main`'s return value (a summary for callers in Python) is dropped: `app.run` would take it as the exit status.
    """
    define_flags(flags.FLAGS)
    run_main(lambda argv: main(argv) and None)
