"""Token auth and TLS with the real CLIs: `rtc-signal token` mints, `rtc-signal
serve --secret` (or RTC_SIGNAL_SECRET) checks, `rtc-peer --token` presents;
`serve --certfile/--keyfile` serves wss:// to `rtc-peer --cafile`."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rtc_signal.proto import tokens
from tests.conftest import (
    server_command,
    server_stderr,
    start_server_process,
    stop_server_process,
    subprocess_env,
)
from tests.helpers_tls import self_signed_cert
from tests.integration.procs import FAST, LOOPBACK, PEER, run_peer, server, start_peer, wait
from tests.integration.procs import wait_registered as wait_answer_registered

SECRET = "cli-secret-0123456789abcdef"


def rtc_signal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server_command(*args),
        capture_output=True,
        text=True,
        timeout=20,
        env={**subprocess_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def mint(peer_id: str, *extra: str) -> str:
    """A token from `rtc-signal token` (the secret from the environment)."""
    result = rtc_signal("token", "--id", peer_id, *extra, env={"RTC_SIGNAL_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_help_documents_the_security_options() -> None:
    """`rtc-signal serve --help`, `rtc-signal token --help` and `rtc-peer offer
    --help` list the options of the security model and their env variables."""
    serve = rtc_signal("serve", "--help")
    assert serve.returncode == 0, serve.stderr
    for option in (
        "--secret",
        "RTC_SIGNAL_SECRET",
        "--allow-origin",
        "--max-connections",
        "--max-connections-per-ip",
        "--handshake-timeout",
        "--rate-limit",
        "--rate-burst",
        "--idle-timeout",
        "--certfile",
        "--keyfile",
    ):
        assert option in serve.stdout, option
    token = rtc_signal("token", "--help")
    assert token.returncode == 0 and "--id" in token.stdout and "--ttl" in token.stdout
    peer = subprocess.run(
        [*PEER, "offer", "--help"], capture_output=True, text=True, timeout=30, env=subprocess_env()
    )
    for option in ("--token", "RTC_PEER_TOKEN", "--cafile"):
        assert option in peer.stdout, option


def test_token_command_prints_a_token_for_the_id_valid_for_the_ttl() -> None:
    """`rtc-signal token --id alice --ttl 1h` prints one line the server accepts
    for alice during that hour (secret from --secret or RTC_SIGNAL_SECRET alike)."""
    before = time.time()
    from_env = mint("alice", "--ttl", "1h")
    from_option = rtc_signal("token", "--id", "alice", "--ttl", "1h", "--secret", SECRET)
    assert from_option.returncode == 0, from_option.stderr
    for token in (from_env, from_option.stdout.strip()):
        assert tokens.verify(SECRET.encode(), token, before + 3590) == ("alice", None)
        with pytest.raises(tokens.TokenError, match="expired"):
            tokens.verify(SECRET.encode(), token, time.time() + 3601)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "--id", "a"], "a secret is needed"),
        (["token", "--id", "a", "--secret", "short"], "at least 16"),
        (["token", "--id", "a", "--secret", SECRET, "--ttl", "soon"], "bad duration"),
        (["serve", "--secret", "short"], "at least 16"),
        (["serve", "--keyfile", __file__], "--keyfile needs --certfile"),
    ],
)
def test_bad_secret_ttl_or_tls_options_are_usage_errors(args: list[str], message: str) -> None:
    result = rtc_signal(*args, env={"RTC_SIGNAL_SECRET": ""})
    assert result.returncode == 2, result
    assert message in result.stderr


def test_serve_says_in_its_log_whether_it_runs_open_or_with_tokens() -> None:
    proc, _ = start_server_process()
    try:
        time.sleep(0.2)
        assert "running open (no authentication)" in server_stderr(proc)
    finally:
        stop_server_process(proc)
    proc, _ = start_server_process("--secret", SECRET)
    try:
        time.sleep(0.2)
        log = server_stderr(proc)
        assert "token authentication on" in log and "running open" not in log
        assert SECRET not in log
    finally:
        stop_server_process(proc)


def test_peers_with_tokens_call_through_a_server_with_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The secret from RTC_SIGNAL_SECRET; the answer peer's token by --token, the
    offer peer's by RTC_PEER_TOKEN, its ID taken from the token."""
    monkeypatch.setenv("RTC_SIGNAL_SECRET", SECRET)
    with server() as url:
        answer = start_peer(
            "answer", "--id", "alice", "--token", mint("alice"), "--signal", url, *LOOPBACK, *FAST
        )
        wait_answer_registered(answer)
        offer = run_peer(
            "offer",
            "--target",
            "alice",
            "--signal",
            url,
            *LOOPBACK,
            *FAST,
            "--log-level",
            "info",
            env={"RTC_PEER_TOKEN": mint("bob")},
        )
        answered = wait(answer)
    assert (offer.returncode, answered.returncode) == (0, 0), offer.stderr + answered.stderr
    assert offer.lines("recv ") == [f"recv answer-{n}" for n in range(1, 6)]
    assert "as 'bob'" in offer.stderr  # its ID came from the token


@pytest.mark.parametrize(
    ("token_args", "expected"),
    [
        ([], "HTTP 401: rtc-signal: a token is required"),
        (["--token", "not-a-token"], "HTTP 401: rtc-signal: invalid token: malformed"),
        (
            ["--token", tokens.mint(b"some-other-secret-123", "carol", int(time.time()) + 3600)],
            "HTTP 401: rtc-signal: invalid token: token signature does not match",
        ),
        (
            ["--token", tokens.mint(SECRET.encode(), "carol", int(time.time()) - 1)],
            "HTTP 401: rtc-signal: invalid token: token for 'carol' expired",
        ),
        (
            ["--token", tokens.mint(SECRET.encode(), "mallory", int(time.time()) + 3600)],
            "is not the ID of this connection's token ('mallory') (code 403)",
        ),
    ],
    ids=["missing", "malformed", "forged", "expired", "other-id"],
)
def test_peers_without_a_valid_token_for_their_id_fail_with_the_reason(
    token_args: list[str], expected: str
) -> None:
    """An answer peer without a (valid) token for its ID exits 1 with one line
    naming the server's reason."""
    with server("--secret", SECRET) as url:
        result = run_peer("answer", "--id", "carol", *token_args, "--signal", url, *LOOPBACK)
    assert result.returncode == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_tls_server_and_peers_with_the_ca_file(tmp_path: Path) -> None:
    """`serve --certfile --keyfile` prints a wss:// URL; peers given the CA file
    (--cafile) call through it; a peer without it fails certificate verification."""
    cert = self_signed_cert(tmp_path)
    with server("--certfile", str(cert.certfile), "--keyfile", str(cert.keyfile)) as url:
        assert url.startswith("wss://127.0.0.1:")
        tls = ["--signal", url, "--cafile", str(cert.certfile)]
        answer = start_peer("answer", "--id", "tls", *tls, *LOOPBACK, *FAST)
        wait_answer_registered(answer)
        offer = run_peer("offer", "--target", "tls", *tls, *LOOPBACK, *FAST)
        answered = wait(answer)
        untrusting = run_peer("offer", "--target", "tls", "--signal", url, *LOOPBACK)
    assert (offer.returncode, answered.returncode) == (0, 0), offer.stderr + answered.stderr
    assert len(offer.lines("recv ")) == 5
    assert untrusting.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusting.stderr


def test_serve_max_connections_per_ip_refuses_the_address_over_its_share() -> None:
    """`rtc-signal serve --max-connections-per-ip 1`: while one connection from
    127.0.0.1 is open, the next one from 127.0.0.1 gets HTTP 503 at once, and the
    log's limits line shows the per-IP limit."""
    proc, url = start_server_process("--max-connections-per-ip", "1", "--log-level", "info")
    try:
        address = urlsplit(url)
        target = (address.hostname or "127.0.0.1", address.port or 0)
        with socket.create_connection(target, timeout=10) as held:
            held.sendall(b"GET /register HTTP/1.1\r\n")  # a request under way
            with socket.create_connection(target, timeout=10) as refused:
                answer = b""
                while chunk := refused.recv(4096):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"from your address" in answer
        assert "max connections" in server_stderr(proc) and "(per IP 1)" in server_stderr(proc)
    finally:
        stop_server_process(proc)
