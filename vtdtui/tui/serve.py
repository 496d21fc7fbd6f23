"""`vtdtui serve`: the same app in web browsers, for workshops and talks.

textual-serve runs an HTTP server; each browser tab that opens the page starts its own
`python -m vtdtui ARGS` under Textual's web driver and talks to it over a websocket.
So every tab is a separate machine, as separate terminals would be, and whatever
`vtdtui ARGS` does in a terminal it does in the browser (a scenario, a replay...).
"""

from __future__ import annotations

import shlex
import socket
import sys

DEFAULT_HOST = "localhost"  # loopback only: opening it to a room is the user's choice (--host 0.0.0.0)
DEFAULT_PORT = 8000


def command(args: list[str]) -> str:
    """The shell command each browser session runs (textual-serve starts it through a
    shell): this Python, so the served app is this installation's."""
    return shlex.join([sys.executable, "-m", "vtdtui", *args])


def url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _check_bindable(host: str, port: int) -> None:
    """Bind every address the server will, and let go: a port in use or a bad host is
    an OSError here, before textual-serve prints its banner as if it were serving."""
    for family, kind, proto, _name, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                  flags=socket.AI_PASSIVE):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            s.bind(address)


def run(host: str, port: int, args: list[str]) -> int:
    """Serve until Ctrl+C or SIGTERM (textual-serve handles both and returns).
    An address that cannot be bound is an OSError, for the caller to word."""
    from textual_serve.server import Server

    _check_bindable(host, port)
    title = " ".join(["vtdtui", *args])
    Server(command(args), host=host, port=port, title=title, public_url=url(host, port)).serve()
    return 0
