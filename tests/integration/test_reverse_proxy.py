"""The README's nginx example, as written there, in front of `rtc-signal serve`:
TLS termination, the WebSocket upgrade, tokens passed through, refusals' bodies
passed back, the page served, and no token in the access log.

The configuration is the README's ``nginx`` block with only the addresses,
ports and file paths changed, so that the documentation cannot drift from
what works. Needs nginx (`.ci/run` installs ``nginx-light``)."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_signal.proto import tokens
from tests.conftest import REPO, run, start_server_process, stop_server_process
from tests.helpers_tls import CertFiles, self_signed_cert
from tests.integration.procs import FAST, LOOPBACK, run_peer, start_peer, wait, wait_registered

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (.ci/run installs nginx-light)"
)
SECRET = "proxy-secret-0123456789abcdef"


def readme_nginx_block() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"```nginx\n(.*?)```", readme, re.S)
    assert match is not None, "the README has no nginx example"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_conf(directory: Path, cert: CertFiles, listen: int, upstream: int) -> str:
    block = readme_nginx_block()
    replacements = {
        "listen 443 ssl;": f"listen 127.0.0.1:{listen} ssl;",
        "/etc/letsencrypt/live/signal.example.com/fullchain.pem": str(cert.certfile),
        "/etc/letsencrypt/live/signal.example.com/privkey.pem": str(cert.keyfile),
        "/var/log/nginx/rtc-signal.log": str(directory / "access.log"),
        "127.0.0.1:18080": f"127.0.0.1:{upstream}",
    }
    for old, new in replacements.items():
        assert old in block, f"the README's nginx example no longer has {old!r}"
        block = block.replace(old, new)
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # (user root: the workers must read the test's private temporary directory)
    return (
        f"user root;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n{temp}\n{block}\n}}\n"
    )


@pytest.fixture
def proxied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, CertFiles]]:
    """`rtc-signal serve --secret` behind the README's nginx; yields (wss URL, cert)."""
    monkeypatch.setenv("RTC_SIGNAL_SECRET", SECRET)
    cert = self_signed_cert(tmp_path)
    server, url = start_server_process()
    upstream = int(url.rsplit(":", 1)[1])
    listen = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, cert, listen, upstream))
    check = subprocess.run([NGINX, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proxy = subprocess.Popen(
        [NGINX, "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", listen)) == 0:
                    break
            assert proxy.poll() is None, (
                f"nginx exited: {proxy.stderr.read() if proxy.stderr else ''}"
            )
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
        yield f"wss://127.0.0.1:{listen}", cert
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(5)
        stop_server_process(server)


def token(peer_id: str) -> str:
    return tokens.mint(SECRET.encode(), peer_id, int(time.time()) + 600)


def test_peers_call_through_the_readme_nginx_config(
    proxied: tuple[str, CertFiles], tmp_path: Path
) -> None:
    """wss:// through nginx (TLS terminated there), tokens in the Authorization
    header: a full call; without a token the server's 401 and its reason come
    back through the proxy; the page is served; the access log has no query."""
    url, cert = proxied
    tls = ["--signal", url, "--cafile", str(cert.certfile)]
    answer = start_peer(
        "answer", "--id", "alice", "--token", token("alice"), *tls, *LOOPBACK, *FAST
    )
    wait_registered(answer)
    offer = run_peer("offer", "--target", "alice", "--token", token("bob"), *tls, *LOOPBACK, *FAST)
    answered = wait(answer)
    assert (offer.returncode, answered.returncode) == (0, 0), offer.stderr + answered.stderr
    assert offer.lines("recv ") == [f"recv answer-{n}" for n in range(1, 6)]

    refused = run_peer("offer", "--target", "alice", *tls, *LOOPBACK)
    assert refused.returncode == 1
    assert "HTTP 401: rtc-signal: a token is required" in refused.stderr

    # a browser-style handshake with ?token=: accepted, and not logged
    async def browser_style() -> None:
        from websockets.asyncio.client import connect

        context = ssl.create_default_context(cafile=str(cert.certfile))
        ws = await connect(f"{url}/register?token={token('carol')}", ssl=context)
        await ws.close()

    run(browser_style())
    https = url.replace("wss://", "https://", 1)
    context = ssl.create_default_context(cafile=str(cert.certfile))
    with urllib.request.urlopen(f"{https}/", context=context, timeout=10) as page:
        assert page.status == 200 and b"<html" in page.read()
    log = (tmp_path / "access.log").read_text()
    assert '"GET /register" 101' in log and '"GET /offer" 401' in log, log
    assert "token" not in log, log
