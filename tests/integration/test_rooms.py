"""Rooms end to end: ``rtc-peer join`` processes (and examples/room_echo.py)
in a real ``rtc-signal serve``, every connection a real aiortc mesh link on
127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.procs import (
    LOOPBACK,
    FilePeer,
    server,
    start_file_peer,
    stop,
    wait_until,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: bound for a whole mesh to form and finish (4 members = 6 aiortc links on a
#: loaded 2-core machine)
MESH_TIMEOUT = 90


def member(
    url: str, tmp: Path, room: str, name: str, *args: str, stdin: int = subprocess.DEVNULL
) -> FilePeer:
    """Start `rtc-peer join --room ROOM --id NAME ARGS` (output in files)."""
    return start_file_peer(
        "join",
        "--room",
        room,
        "--id",
        name,
        "--signal",
        url,
        *LOOPBACK,
        *args,
        stdin=stdin,
        directory=tmp,
        name=name,
    )


def has(peer: FilePeer, text: str) -> bool:
    if peer.proc.poll() is not None and text not in peer.stderr():
        raise AssertionError(
            f"member exited {peer.proc.returncode} before {text!r}:\n{peer.stderr()}"
        )
    return text in peer.stderr()


def kill(peers: list[FilePeer]) -> None:
    for peer in peers:
        if peer.proc.poll() is None:
            peer.proc.kill()
            peer.proc.wait(10)


def test_four_members_exchange_timer_messages_every_pair_both_ways(tmp_path: Path) -> None:
    """Four `rtc-peer join --count 3 --expect 3` started at once: each exits 0
    having printed the 3 messages of each of the 3 others."""
    names = ["p1", "p2", "p3", "p4"]
    with server() as url:
        peers = [
            member(
                url, tmp_path, "four", name, "--interval", "0.2", "--count", "3", "--expect", "3"
            )
            for name in names
        ]
        try:
            codes = [peer.wait(MESH_TIMEOUT) for peer in peers]
        finally:
            kill(peers)
    for name, peer, code in zip(names, peers, codes, strict=True):
        assert code == 0, f"{name}:\n{peer.stderr()}"
        lines = set(peer.stdout().decode().splitlines())
        for other in names:
            if other != name:
                expected = {f"{other}: {other}-{k}" for k in (1, 2, 3)}
                assert expected <= lines, f"{name} missed {expected - lines}:\n{peer.stderr()}"
        assert not any(line.startswith(f"{name}:") for line in lines), "echo of our own"
        assert "rtc-peer: done:" in peer.stderr()


def test_killed_member_is_seen_leaving_and_can_rejoin(tmp_path: Path) -> None:
    """SIGKILL one of three members: the others print that it left; started
    again under the same ID it joins and exchanges messages with both."""
    with server() as url:
        a = member(url, tmp_path, "kill", "a", "--interval", "0.3")
        b = member(url, tmp_path, "kill", "b", "--interval", "0.3")
        c = member(url, tmp_path, "kill", "c", "--interval", "0.3")
        peers = [a, b, c]
        try:
            for peer, others in ((a, "bc"), (b, "ac"), (c, "ab")):
                for other in others:
                    wait_until(
                        lambda p=peer, o=other: has(p, f"connected to {o}"),  # type: ignore[misc]
                        f"{peer.stderr_path.stem} connected to {other}",
                        MESH_TIMEOUT,
                    )
            for peer in (a, b):  # c's messages flow before it is killed
                wait_until(
                    lambda p=peer: "c: c-1" in p.stdout().decode(),  # type: ignore[misc]
                    "c's first message",
                    30,
                )
            c.proc.send_signal(signal.SIGKILL)
            c.proc.wait(10)
            for peer in (a, b):
                wait_until(
                    lambda p=peer: has(p, "c left kill"),  # type: ignore[misc]
                    "the kill seen",
                    30,
                )
            c2 = member(
                url, tmp_path, "kill", "c", "--interval", "0.2", "--count", "2", "--expect", "2"
            )
            peers.append(c2)
            assert c2.wait(MESH_TIMEOUT) == 0, c2.stderr()
            lines = set(c2.stdout().decode().splitlines())
            assert {"a: a-1", "a: a-2", "b: b-1", "b: b-2"} <= lines, c2.stderr()
            for peer in (a, b):
                wait_until(
                    lambda p=peer: p.stderr().count("c left kill") == 2,  # type: ignore[misc]
                    "c's second leave",
                    30,
                )
                out = peer.stdout().decode().splitlines()
                assert out.count("c: c-1") == 2 and "c: c-2" in out  # both lives of c
                assert peer.proc.poll() is None, "a member exited"
        finally:
            for peer in (a, b):
                stop_file_peer(peer)
            kill(peers)


def stop_file_peer(peer: FilePeer) -> None:
    if peer.proc.poll() is None:
        peer.proc.send_signal(signal.SIGTERM)
        try:
            peer.proc.wait(10)
        except subprocess.TimeoutExpired:
            peer.proc.kill()
            peer.proc.wait(5)


def test_chat_lines_go_to_every_member_and_end_of_input_leaves(tmp_path: Path) -> None:
    """A line typed into `rtc-peer join` reaches both other members as
    `<sender>: <text>`; end of input leaves the room (exit 0, others notified)."""
    with server() as url:
        x = member(url, tmp_path, "chat", "x", "--interval", "5")
        y = member(url, tmp_path, "chat", "y", "--interval", "5")
        talker = member(url, tmp_path, "chat", "talker", stdin=subprocess.PIPE)
        peers = [x, y, talker]
        try:
            for other in ("x", "y"):
                wait_until(
                    lambda o=other: has(talker, f"connected to {o}"),  # type: ignore[misc]
                    f"talker connected to {other}",
                    MESH_TIMEOUT,
                )
            assert talker.proc.stdin is not None
            talker.proc.stdin.write(b"hello room\n")
            talker.proc.stdin.close()
            assert talker.wait(30) == 0, talker.stderr()
            for peer in (x, y):
                wait_until(lambda p=peer: has(p, "talker left chat"), "talker's leave", 30)  # type: ignore[misc]
                assert "talker: hello room" in peer.stdout().decode().splitlines()
        finally:
            for peer in (x, y):
                stop_file_peer(peer)
            kill(peers)


def test_a_taken_member_id_is_refused_clearly(tmp_path: Path) -> None:
    """A second `rtc-peer join` with an ID already in the room exits 1 saying why."""
    with server() as url:
        first = member(url, tmp_path, "dup", "same", "--interval", "5")
        try:
            wait_until(lambda: has(first, "joined dup as"), "first join", 30)
            second = start_file_peer(
                "join",
                "--room",
                "dup",
                "--id",
                "same",
                "--signal",
                url,
                *LOOPBACK,
                stdin=subprocess.DEVNULL,
                directory=tmp_path,
                name="second",
            )
            assert second.wait(30) == 1
            assert "409" in second.stderr(), second.stderr()
        finally:
            stop_file_peer(first)


def test_room_echo_example_echoes_a_cli_members_messages(tmp_path: Path) -> None:
    """examples/room_echo.py (library API: join) greets a `rtc-peer join` member
    and echoes its timer messages back to it."""
    with server() as url:
        echo = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "room_echo.py"),
                "--room",
                "ex",
                "--id",
                "echo",
                "--signal",
                url,
                *LOOPBACK,
                "--count",
                "3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            cli = member(url, tmp_path, "ex", "cli", "--interval", "0.2", "--count", "3")
            assert cli.wait(MESH_TIMEOUT) == 0, cli.stderr()
            result = stop(echo, signal.SIGINT, timeout=30)
        finally:
            if echo.poll() is None:
                echo.kill()
                echo.wait(5)
    lines = cli.stdout().decode().splitlines()
    assert "echo: hello cli, this is echo" in lines, cli.stderr()
    assert {"echo: echo: cli-1", "echo: echo: cli-2"} <= set(lines), cli.stderr()
    assert {"cli: cli-1", "cli: cli-2", "cli: cli-3"} <= set(result.stdout.splitlines()), (
        result.stdout + result.stderr
    )


def test_room_tokens_grant_their_id_and_a_plain_token_is_refused(tmp_path: Path) -> None:
    """With a secret set, members joining with `rtc-signal token --room` tokens
    (no --id: the token's ID) mesh up; a room-less token is refused (403)."""
    from rtc_signal.proto import tokens

    secret = b"room-secret-0123456789abcdef"
    expiry = int(time.time()) + 3600

    def joiner(name: str, token: str, *args: str) -> FilePeer:
        return start_file_peer(
            "join",
            "--room",
            "locked",
            "--token",
            token,
            "--signal",
            url,
            *LOOPBACK,
            *args,
            stdin=subprocess.DEVNULL,
            directory=tmp_path,
            name=name,
        )

    with server("--secret", secret.decode()) as url:
        timer = ("--interval", "0.2", "--count", "2")
        ann = joiner("ann", tokens.mint(secret, "ann", expiry, room="locked"), *timer)
        ben = joiner("ben", tokens.mint(secret, "ben", expiry, room="locked"), *timer)
        plain = joiner("plain", tokens.mint(secret, "plain", expiry))
        peers = [ann, ben, plain]
        try:
            assert plain.wait(30) == 1
            assert "403" in plain.stderr(), plain.stderr()
            assert ann.wait(MESH_TIMEOUT) == 0, ann.stderr()
            assert ben.wait(MESH_TIMEOUT) == 0, ben.stderr()
        finally:
            kill(peers)
    assert "ben: ben-2" in ann.stdout().decode().splitlines()
    assert "ann: ann-2" in ben.stdout().decode().splitlines()
