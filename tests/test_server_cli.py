"""The real ``rtc-signal serve`` command, run as a subprocess on loopback."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time

import pytest
from websockets.asyncio.client import ClientConnection

from rtc_signal.proto import Command
from rtc_signal.signaling.router import NOT_FOUND, TOO_LARGE
from tests.conftest import (
    WAIT,
    ServerFactory,
    answer_frame,
    client,
    connect,
    eventually,
    expect_response,
    offer,
    offer_frame,
    recv_frame,
    register,
    run,
    server_command,
    server_stderr,
    start_server_process,
    stop_server_process,
    subprocess_env,
    within,
)

#: The spec: on SIGINT/SIGTERM every client sees 1001 and the process exits 0 within 2 s.
SHUTDOWN_LIMIT = 2.0
CLI_TIMEOUT = 20.0


def rtc_signal(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``rtc-signal args`` to completion (bounded) and capture its output."""
    return subprocess.run(
        server_command(*args),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )


async def closed_code(ws: ClientConnection, timeout: float = WAIT) -> int | None:
    await within(ws.wait_closed(), timeout)
    return ws.close_code


# -- help and arguments ------------------------------------------------------------------


def test_help_lists_every_serve_option() -> None:
    """``rtc-signal serve --help`` exits 0 and documents every option."""
    result = rtc_signal("serve", "--help")
    assert result.returncode == 0, result.stderr
    for option in (
        "--host",
        "--port",
        "--log-level",
        "--max-frame-size",
        "--ping-interval",
        "--ping-timeout",
        "--max-room-size",
        "--no-pages",
        "--no-whep",
        "--help",
    ):
        assert option in result.stdout, f"{option} missing from:\n{result.stdout}"


def test_top_level_help_lists_serve_and_version_works() -> None:
    """``rtc-signal --help`` lists the serve command; ``--version`` prints the version."""
    result = rtc_signal("--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    version = rtc_signal("--version")
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"],
        ["--port", "-1"],
        ["--port", "http"],
        ["--max-frame-size", "10"],
        ["--ping-timeout", "0"],
        ["--ping-interval", "-1"],
        ["--log-level", "loud"],
        ["--no-such-option"],
    ],
    ids=lambda args: " ".join(args),
)
def test_invalid_option_values_are_usage_errors(args: list[str]) -> None:
    """Bad option values exit with click's usage error (2), a message and no traceback."""
    result = rtc_signal("serve", *args)
    assert result.returncode == 2, result
    assert "Error" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_taken_port_exits_non_zero_with_one_line_error() -> None:
    """``serve --port <taken>`` fails fast with a one-line error naming the address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = rtc_signal("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode not in (0, None), result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(port) in lines[0]
    assert "listen" in lines[0].lower() or "in use" in lines[0].lower()
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# -- a running server -------------------------------------------------------------------------


def test_stdout_is_only_the_listening_line() -> None:
    """The URL line is the only stdout output; logs (even debug) go to stderr."""
    proc, url = start_server_process("--log-level", "debug")
    try:
        assert url.startswith("ws://127.0.0.1:")
        assert int(url.rsplit(":", 1)[1]) > 0

        async def main() -> None:
            async with client(url, "/register") as ws:
                await register(ws, "alice")

        run(main())
        stderr = server_stderr(proc)
    finally:
        code = stop_server_process(proc) if proc.poll() is None else proc.returncode
    assert code == 0
    assert "alice" in stderr  # the registration was logged, on stderr


def test_stdout_has_nothing_after_the_listening_line() -> None:
    """After the first line nothing else is printed on stdout until exit."""
    proc, url = start_server_process("--log-level", "debug")
    try:

        async def main() -> None:
            async with client(url, "/register") as ws:
                await register(ws, "alice")

        run(main())
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        rest, _ = proc.communicate(timeout=WAIT)
    finally:
        stop_server_process(proc)
    assert rest == ""
    assert proc.returncode == 0


def test_signal_server_proc_fixture_serves_a_full_call(signal_server_proc: str) -> None:
    """The subprocess server relays an offer and an answer between two real clients."""

    async def main() -> None:
        async with (
            client(signal_server_proc, "/register") as answerer,
            client(signal_server_proc, "/offer") as offerer,
        ):
            await register(answerer, "alice")
            sent = offer_frame("bob", "alice")
            await offerer.send(sent)
            await expect_response(offerer, Command.OFFER_RESPONSE, 0)
            assert await recv_frame(answerer) == sent
            sent = answer_frame("alice", "bob")
            await answerer.send(sent)
            await expect_response(answerer, Command.ANSWER_RESPONSE, 0)
            assert await recv_frame(offerer) == sent
            await offer(offerer, "bob", "nobody", expect_code=NOT_FOUND)

    run(main())


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_loop_option_serves_a_call_on_the_chosen_event_loop(
    server_process_factory: ServerFactory, loop: str
) -> None:
    """``--loop uvloop`` and ``--loop asyncio``: the server logs the loop it runs on and relays."""
    proc, url = server_process_factory("--loop", loop, "--log-level", "debug")

    async def main() -> None:
        async with client(url, "/register") as answerer, client(url, "/offer") as offerer:
            await register(answerer, "alice")
            sent = offer_frame("bob", "alice")
            await offerer.send(sent)
            await expect_response(offerer, Command.OFFER_RESPONSE, 0)
            assert await recv_frame(answerer) == sent
            await offer(offerer, "bob", "nobody", expect_code=NOT_FOUND)

    run(main())
    assert f"event loop: {loop}" in server_stderr(proc)


def test_max_frame_size_option_is_honoured(server_process_factory: ServerFactory) -> None:
    """``--max-frame-size 1024``: 1.5 KiB gets 413 and the session lives; > 4 KiB closes 1009."""
    _, url = server_process_factory("--max-frame-size", "1024")

    async def main() -> None:
        async with client(url, "/register") as ws:
            await ws.send(b"{" + b" " * 1500 + b"}")
            await expect_response(ws, Command.ERROR, TOO_LARGE)
            await register(ws, "alice")
            await ws.send(b"x" * 4097)
            assert await closed_code(ws) == 1009

    run(main())


def test_ping_options_drop_an_unresponsive_peer(server_process_factory: ServerFactory) -> None:
    """``--ping-interval 0.2 --ping-timeout 0.2``: a peer that stops reading loses its ID."""
    _, url = server_process_factory("--ping-interval", "0.2", "--ping-timeout", "0.2")

    async def main() -> None:
        zombie = await connect(url, "/register")
        try:
            await register(zombie, "zombie")
            zombie.transport.pause_reading()
            async with client(url, "/offer") as caller:
                frame = offer_frame("bob", "zombie")

                async def gone() -> None:
                    while True:
                        await caller.send(frame)
                        response = await expect_response(caller, Command.OFFER_RESPONSE, None)
                        if response.code == NOT_FOUND:
                            return
                        assert response.code == 0
                        await asyncio.sleep(0.1)

                await within(gone(), 5)
        finally:
            zombie.transport.abort()

    run(main())


# -- shutdown on signals -------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_closes_every_client_with_1001_and_exits_0_fast(sig: signal.Signals) -> None:
    """On SIGINT/SIGTERM every connected client sees 1001 and the process exits 0 in < 2 s."""
    proc, url = start_server_process()
    try:

        async def main() -> float:
            answerer = await connect(url, "/register")
            offerer = await connect(url, "/offer")
            idle_register = await connect(url, "/register")
            idle_offer = await connect(url, "/offer")
            texter = await connect(url, "/register")
            clients = [answerer, offerer, idle_register, idle_offer, texter]
            await register(answerer, "alice")
            await register(texter, "tex", text=True)
            await offer(offerer, "bob", "alice")
            await recv_frame(answerer)

            def wait_exit() -> float:
                proc.wait(timeout=10)
                return time.monotonic()

            start = time.monotonic()
            proc.send_signal(sig)
            exited = asyncio.ensure_future(asyncio.to_thread(wait_exit))
            codes = await asyncio.gather(*(closed_code(ws, 10) for ws in clients))
            assert codes == [1001] * len(clients)
            return await within(exited, 15) - start

        elapsed = run(main())
        assert proc.returncode == 0, server_stderr(proc)
        assert elapsed < SHUTDOWN_LIMIT, f"exit took {elapsed:.2f} s"
        assert "Traceback" not in server_stderr(proc)
    finally:
        stop_server_process(proc, signal.SIGKILL)


def test_sigterm_with_an_unresponsive_client_still_exits_0_fast() -> None:
    """A client that never answers the closing handshake cannot hold the exit past 2 s."""
    proc, url = start_server_process()
    try:

        async def main() -> float:
            stuck = await connect(url, "/register")
            healthy = await connect(url, "/register")
            await register(stuck, "stuck")
            await register(healthy, "healthy")
            stuck.transport.pause_reading()

            def wait_exit() -> float:
                proc.wait(timeout=10)
                return time.monotonic()

            try:
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                exited = asyncio.ensure_future(asyncio.to_thread(wait_exit))
                assert await closed_code(healthy, 10) == 1001
                return await within(exited, 15) - start
            finally:
                stuck.transport.abort()

        elapsed = run(main())
        assert proc.returncode == 0, server_stderr(proc)
        assert elapsed < SHUTDOWN_LIMIT, f"exit took {elapsed:.2f} s"
    finally:
        stop_server_process(proc, signal.SIGKILL)


def test_signal_with_no_clients_exits_0_at_once() -> None:
    """An idle server exits 0 promptly on SIGTERM (well under the 2 s limit)."""
    proc, _ = start_server_process()
    start = time.monotonic()
    code = stop_server_process(proc, signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - start
    assert code == 0
    assert elapsed < SHUTDOWN_LIMIT


def test_eventually_helper_fails_at_deadline() -> None:
    """The shared ``eventually`` helper raises AssertionError when the condition never holds."""
    with pytest.raises(AssertionError):
        run(eventually(lambda: False, timeout=0.1))
