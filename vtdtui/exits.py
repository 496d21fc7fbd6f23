"""What every entry point says on the way out: exit statuses and the one error line.

The command line and the TUI both end with these (DESIGN.md, "Command line": bad
input is one line naming the place, exit status 2); they live here, below both, so
that neither has to import the other for them.
"""

from __future__ import annotations

import signal
import sys

from .textsafe import clip, printable

PROG = "vtdtui"
EXIT_BAD_INPUT = 2
# Ctrl+C: 128 + SIGINT, as a shell reports a process the signal ended.
EXIT_INTERRUPTED = 128 + signal.SIGINT
# The reader of standard output went away (`vtdtui dump --json - | head -c 10`), or
# standard output is closed.  128 + SIGPIPE is what a shell shows for any program the
# default SIGPIPE action ends (cat, grep): the output was not all delivered, so not 0
# (a script with `set -o pipefail` must not take it for success), and not 1 or 2, which
# mean "an expect failed" and "bad input" here.  Python ignores SIGPIPE, so we exit
# with the status ourselves, quietly: the reader chose to stop, nothing went wrong.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
# A bug: an exception no handler expected.  One line, not a traceback (VTDTUI_DEBUG=1
# shows the traceback); 70 is EX_SOFTWARE of sysexits.h.
EXIT_INTERNAL = 70
# An error line is for reading: however long the input it quotes, the line is cut here.
MAX_ERROR_CHARS = 400


class BadInput(Exception):
    """Bad input from the user; the message starts with the place."""


def error_line(message: str) -> None:
    say(f"{PROG}: error: {message}")


def say(text: str) -> None:
    # A path or pasted value could hold a newline or an ESC; the contract is one line,
    # with nothing the terminal acts on, and bounded in length.
    # Cut before escaping (bounded work on a 10 MB message) and after (an escape is 4 long).
    line = clip(printable(clip(text, MAX_ERROR_CHARS)), MAX_ERROR_CHARS)
    err = sys.stderr
    if err is None:  # stderr closed: print(file=None) would write to stdout instead
        return
    try:
        err.write(line + "\n")
        err.flush()
    except (OSError, ValueError):  # stderr gone too: nothing more can be said
        pass
