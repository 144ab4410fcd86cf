"""``rtc-signal``: the signaling server's command line (a thin layer over
:mod:`signaling.server`)."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from signaling.router import DEFAULT_MAX_FRAME
from signaling.server import ServerConfig, run_server

LOG_LEVELS = ["debug", "info", "warning", "error"]


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.version_option(package_name="rtc-signal")
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
def serve(
    host: str,
    port: int,
    log_level: str,
    max_frame_size: int,
    ping_interval: float,
    ping_timeout: float,
    resume_grace: float,
) -> None:
    """Run the signaling server until SIGINT/SIGTERM."""
    setup_logging(log_level)
    config = ServerConfig(
        host=host,
        port=port,
        max_frame=max_frame_size,
        ping_interval=ping_interval or None,
        ping_timeout=ping_timeout if ping_interval else None,
        resume_grace=resume_grace,
    )

    try:
        asyncio.run(run_server(config, on_ready=lambda url: click.echo(f"listening on {url}")))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc


if __name__ == "__main__":
    main()
