"""What every absl entry point of the package shares."""

from collections.abc import Callable

from absl import app, flags


def run_app(define_flags: Callable[[flags.FlagValues], None], main: Callable) -> None:
    """Defines the program's flags (only now, so importing its module defines none) and runs `main`.

    `main`'s return value (a summary for callers in Python) is dropped: `app.run` would take it as the exit status.
    """
    define_flags(flags.FLAGS)
    app.run(lambda argv: main(argv) and None)
