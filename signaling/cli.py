"""``rtc-signal``: the signaling server's command line (a thin layer over
:mod:`signaling.server`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from rtc_signal.proto import __version__

# Only what the options need is imported here: the server (websockets,
# asyncio, the protocol's pydantic models) is imported by `serve` itself, so
# `rtc-signal --help`, `--version` and `token` start as fast as click does.
from rtc_signal.signaling.limits import DEFAULT_MAX_FRAME, RateLimit

LOG_LEVELS = ["debug", "info", "warning", "error"]


def setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


#: the --loop choices of ``serve``
LOOPS = ["auto", "uvloop", "asyncio"]


def event_loop_runner(name: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """``asyncio.run`` on the event loop ``name`` (one of :data:`LOOPS`).

    uvloop (libuv, in C) runs the relay's transports and callbacks faster than
    asyncio's selector loop: about 1.2x more messages per second at 100 pairs
    (``benchmarks/relay.py``). ``auto`` uses it when it imports (it is a
    dependency except on Windows), asyncio otherwise.
    """
    import asyncio
    import logging

    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise click.ClickException(
                    "--loop uvloop: uvloop is not installed (pip install uvloop)"
                ) from None
        else:
            version = getattr(uvloop, "__version__", "?")  # (not in its type stubs)
            logging.getLogger(__name__).debug("event loop: uvloop %s", version)
            runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
            return runner
    logging.getLogger(__name__).debug("event loop: asyncio")
    return asyncio.run


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

#: file descriptors kept for everything but client connections (logs, the
#: listening socket, DNS...) when --max-connections is derived from the limit
FD_RESERVE = 64

_secret_option = click.option(
    "--secret",
    envvar="RTC_SIGNAL_SECRET",
    show_envvar=True,
    help="Token secret (at least 16 characters). Prefer the environment variable: "
    "a command-line argument is visible to every local user.",
)


def _security_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``serve``'s security and limit options (README "Security model")."""
    options: list[Decorator] = [
        _secret_option,
        click.option(
            "--allow-origin",
            "allow_origins",
            multiple=True,
            metavar="ORIGIN",
            help="Browser origin allowed to connect, e.g. https://app.example.com "
            "(repeatable). Default: any. Clients sending no Origin (non-browsers) "
            "are always allowed.",
        ),
        click.option(
            "--max-connections",
            type=click.IntRange(1),
            default=None,
            help="Open TCP connections (counted from accept) beyond which the oldest "
            "one still sending its request is dropped, or, if none is, new ones get "
            "HTTP 503. "
            f"Default: the open-file limit (raised to its maximum) minus {FD_RESERVE}.",
        ),
        click.option(
            "--max-connections-per-ip",
            type=click.IntRange(1),
            default=None,
            help="Open TCP connections from one source address (counted from accept) "
            "beyond which new ones from it get HTTP 503 at once. Default: no such "
            "limit. Leave it off behind a reverse proxy: every connection then comes "
            "from the proxy's address (set per-IP limits in the proxy instead).",
        ),
        click.option(
            "--handshake-timeout",
            default=10.0,
            show_default=True,
            type=click.FloatRange(0, 10, min_open=True),
            help="Seconds from TCP accept to the end of the WebSocket handshake; "
            "slower connections are closed.",
        ),
        click.option(
            "--rate-limit",
            default=100.0,
            show_default=True,
            type=click.FloatRange(0),
            help="Messages per second per connection (0: no limit); over it, 429; "
            "over it for 5 s, the connection is closed (1008).",
        ),
        click.option(
            "--rate-burst",
            default=200,
            show_default=True,
            type=click.IntRange(1),
            help="Messages a connection may send at once before the rate applies.",
        ),
        click.option(
            "--idle-timeout",
            default=60.0,
            show_default=True,
            type=click.FloatRange(0),
            help="Close connections that have not registered (or sent an offer) "
            "within this many seconds (0: never).",
        ),
        click.option(
            "--certfile",
            type=click.Path(exists=True, dir_okay=False),
            help="PEM certificate chain: serve wss:// (TLS).",
        ),
        click.option(
            "--keyfile",
            type=click.Path(exists=True, dir_okay=False),
            help="PEM private key (if not in --certfile).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (each connection is a
    file); return the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _security_config(opts: dict[str, Any]) -> dict[str, Any]:
    """ServerConfig fields from the options of :func:`_security_options`."""
    from rtc_signal.proto import tokens

    secret = None
    if opts["secret"] is not None:
        try:
            secret = tokens.check_secret(opts["secret"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--secret") from None
    if opts["keyfile"] and not opts["certfile"]:
        raise click.UsageError("--keyfile needs --certfile")
    max_connections = opts["max_connections"]
    fd_limit = _raise_fd_limit()
    if max_connections is None:
        max_connections = max(1, fd_limit - FD_RESERVE)
    rate = opts["rate_limit"]
    return {
        "secret": secret,
        "allow_origins": tuple(opts["allow_origins"]),
        "max_connections": max_connections,
        "max_connections_per_ip": opts["max_connections_per_ip"],
        "handshake_timeout": opts["handshake_timeout"],
        "rate_limit": RateLimit(rate, opts["rate_burst"]) if rate else None,
        "idle_timeout": opts["idle_timeout"] or None,
        "certfile": opts["certfile"],
        "keyfile": opts["keyfile"],
    }


@click.group()
@click.version_option(version=__version__)
def main() -> None:
    """rtc-signal: WebRTC signaling, wire-compatible with the Go (pion) demo."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=18080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one; the URL is printed on stdout).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
    help="Logging threshold (logs go to stderr).",
)
@click.option(
    "--max-frame-size",
    default=DEFAULT_MAX_FRAME,
    show_default=True,
    type=click.IntRange(256),
    help="Frames larger than this many bytes are refused with 413.",
)
@click.option(
    "--ping-interval",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between keepalive pings (0 disables keepalive).",
)
@click.option(
    "--ping-timeout",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds to wait for a pong before dropping the peer.",
)
@click.option(
    "--resume-grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a dropped answer peer's ID stays reserved for it to reconnect "
    "(peers that sent a resume key; 0 disables).",
)
@click.option(
    "--max-room-size",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="Members a room (/room) may have at once; more are refused with 503.",
)
@click.option(
    "--whep/--no-whep",
    default=True,
    show_default=True,
    help="Accept WHEP players at /whep/<peer-id> (POST an SDP offer, DELETE to end).",
)
@click.option(
    "--pages/--no-pages",
    default=True,
    show_default=True,
    help="Serve the browser page (/) and the JavaScript client (/rtc-signal.js).",
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    show_default=True,
    help="Serve Prometheus metrics at /metrics (/healthz and /readyz are always served).",
)
@click.option(
    "--metrics-token",
    envvar="RTC_SIGNAL_METRICS_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Bearer token that /metrics requires (default: /metrics is open). Prefer the "
    "environment variable: a command-line argument is visible to every local user.",
)
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    default=None,
    help="Join the cluster whose registry and message bus is this Redis "
    "(redis://HOST:PORT/DB): an ID taken on any node is taken on all, and peers "
    'on different nodes can call each other (README "Running a cluster").',
)
@click.option(
    "--node-id",
    default=None,
    help="This node's name in the cluster (no spaces). Default: a random one.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Run this many server processes on one port (SO_REUSEPORT), nodes of the "
    "cluster on --redis (required with more than one).",
)
@click.option("--reuse-port", is_flag=True, hidden=True, help="Bind with SO_REUSEPORT.")
@click.option(
    "--sibling-links",
    default="",
    hidden=True,
    help="Set by --workers: NODE=FD,... the links to the sibling workers.",
)
@click.option(
    "--loop",
    "loop_name",
    type=click.Choice(LOOPS),
    default="auto",
    show_default=True,
    help="Event loop: uvloop (relays faster), asyncio, or auto (uvloop when installed).",
)
@_security_options
def serve(
    host: str,
    port: int,
    log_level: str,
    max_frame_size: int,
    ping_interval: float,
    ping_timeout: float,
    resume_grace: float,
    max_room_size: int,
    pages: bool,
    whep: bool,
    metrics: bool,
    metrics_token: str | None,
    redis_url: str | None,
    node_id: str | None,
    workers: int,
    reuse_port: bool,
    sibling_links: str,
    loop_name: str,
    **security: Any,
) -> None:
    """Run the signaling server until SIGINT/SIGTERM."""
    import ssl

    if node_id is not None and (not node_id or any(c.isspace() for c in node_id)):
        raise click.BadParameter(
            "a node ID must be non-empty, without spaces", param_hint="--node-id"
        )
    setup_logging(log_level)
    if workers > 1:
        if redis_url is None:
            raise click.UsageError(
                "--workers needs --redis: the workers are nodes of one cluster, which "
                'shares its registry through Redis (README "Running a cluster")'
            )
        from rtc_signal.signaling.workers import free_port, node_prefix, run_workers

        status = run_workers(
            workers,
            sys.argv[1:],
            port or free_port(host),
            node_id or node_prefix(),
            on_ready=lambda url: click.echo(f"listening on {url}"),
        )
        sys.exit(status)

    from rtc_signal.signaling.cluster import ClusterError
    from rtc_signal.signaling.handover import parse_links
    from rtc_signal.signaling.server import ServerConfig, run_server

    try:
        links = parse_links(sibling_links)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sibling-links") from None

    config = ServerConfig(
        host=host,
        port=port,
        max_frame=max_frame_size,
        ping_interval=ping_interval or None,
        ping_timeout=ping_timeout if ping_interval else None,
        resume_grace=resume_grace,
        max_room_size=max_room_size,
        serve_pages=pages,
        whep=whep,
        metrics=metrics,
        metrics_token=metrics_token or None,
        redis_url=redis_url,
        node_id=node_id,
        reuse_port=reuse_port,
        sibling_links=tuple(links.items()),
        **_security_config(security),
    )

    runner = event_loop_runner(loop_name)
    try:
        runner(run_server(config, on_ready=lambda url: click.echo(f"listening on {url}")))
    except ssl.SSLError as exc:
        raise click.ClickException(f"cannot use --certfile/--keyfile: {exc}") from exc
    except ClusterError as exc:
        raise click.ClickException(f"--redis: {exc}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc


@main.command()
@click.option("--id", "peer_id", required=True, help="The peer ID the token grants.")
@click.option(
    "--ttl",
    default="24h",
    show_default=True,
    help="How long the token is valid: seconds, or with a unit (90s, 15m, 1h, 7d).",
)
@click.option(
    "--room",
    default=None,
    help="Grant the ID in this room only (a room token: valid on /room, for this room).",
)
@_secret_option
def token(peer_id: str, ttl: str, room: str | None, secret: str | None) -> None:
    """Print a token that lets a peer register or call as ID, or with --room
    join that room as ID (needs the server's secret)."""
    from rtc_signal.proto import tokens

    if not secret:
        raise click.UsageError("a secret is needed: --secret or RTC_SIGNAL_SECRET")
    try:
        key = tokens.check_secret(secret)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--secret") from None
    try:
        seconds = tokens.parse_duration(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    if not peer_id:
        raise click.BadParameter("the ID must not be empty", param_hint="--id")
    import math
    import time

    try:
        minted = tokens.mint(key, peer_id, math.ceil(time.time() + seconds), room)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--room" if room else "--id") from None
    click.echo(minted)


if __name__ == "__main__":
    main()
