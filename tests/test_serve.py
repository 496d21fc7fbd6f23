"""`vtdtui serve`: the app in a browser, through textual-serve, on loopback only; and
`vtdtui --version`."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from vtdtui.cli import main
from vtdtui.tui.serve import command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "VTDTUI_STATE_DIR": os.environ.get("VTDTUI_STATE_DIR", "")}
    return subprocess.Popen([sys.executable, "-m", "vtdtui", "serve", "--host", "127.0.0.1", "--port", str(port),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # textual-serve's graceful exit
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def _get(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                assert r.status == 200
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_answers_on_localhost_and_runs_the_app(tmp_path):
    aiohttp = pytest.importorskip("aiohttp")
    port = _free_port()
    proc = _start(port, "--", "--scenario", "viommu")
    try:
        page = _get(f"http://127.0.0.1:{port}/", time.monotonic() + 20)
        assert "vtdtui --scenario viommu" in page and f"ws://127.0.0.1:{port}/ws" in page

        async def first_screen() -> bytes:
            # What a browser does: open the websocket; the app starts and draws.
            seen = b""
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws?width=160&height=50") as ws:
                    while b"viommu" not in seen or b"guest" not in seen:  # the header, the guest unit
                        msg = await asyncio.wait_for(ws.receive(), 20)
                        if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                            break
                        seen += msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            return seen

        screen = asyncio.run(first_screen())
        assert b"viommu" in screen and b"guest" in screen
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _start(port)
        try:
            proc.wait(timeout=20)
        finally:
            out = _stop(proc)
    assert proc.returncode == 2, out
    assert out.strip().startswith(f"vtdtui: error: serve: cannot listen on http://127.0.0.1:{port}: ")
    assert out.count("\n") == 1, "one line, before any banner"


@pytest.mark.parametrize("argv, says", [
    (["serve", "--port", "0"], "0 is outside 1..65535"),
    (["serve", "--port", "http"], "wants a TCP port number"),
    (["serve", "--", "--scenario", "nosuch"], "serve -- --scenario nosuch: "),
    (["serve", "--", "replay", "cachng-mode"], "did you mean 'caching-mode'?"),
    (["serve", "--", "replay", "tour", "--headless"], "paced replay of one FIXTURE"),
    (["serve", "--", "serve"], "not 'serve'"),
    (["serve", "--", "--version"], "nothing to serve"),
    (["serve", "--", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_what_a_browser_would_run_is_checked_first(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err


def test_the_command_is_this_python_running_vtdtui():
    assert shlex.split(command(["replay", "my talk.keys"])) == [sys.executable, "-m", "vtdtui", "replay",
                                                                 "my talk.keys"]


def test_version_is_the_installed_distribution_version(monkeypatch, capsys):
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: "9.8.7" if name == "vtdtui" else "0")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "vtdtui 9.8.7"
