"""``rtc-peer``: offer and answer peers on the command line (a thin layer over
:mod:`peers.session` and :mod:`peers.workloads`)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from peers.errors import PeerError
from peers.ice import IceSettings
from peers.session import AnswerPeer, Call, PeerConfig, call, new_offer_id
from peers.signaling_client import DEFAULT_SIGNAL_URL
from peers.workloads import timer

LOG_LEVELS = ["debug", "info", "warning", "error"]


def _common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--signal",
            "signal_url",
            default=DEFAULT_SIGNAL_URL,
            show_default=True,
            envvar="RTC_SIGNAL_URL",
            show_envvar=True,
            help="Signaling server URL (ws:// or wss://), without the path.",
        ),
        click.option(
            "--ice-server",
            "ice_servers",
            multiple=True,
            metavar="URL",
            help="STUN/TURN server (stun:host:port, turn:host:port?transport=udp); "
            "repeatable. None by default: no public server is ever used.",
        ),
        click.option("--ice-username", help="Username for the TURN servers."),
        click.option("--ice-credential", help="Credential (password) for the TURN servers."),
        click.option(
            "--ice-transport-policy",
            type=click.Choice(["all", "relay"]),
            default="all",
            show_default=True,
            help="'relay' uses TURN candidates only.",
        ),
        click.option(
            "--host-address",
            "host_addresses",
            multiple=True,
            metavar="ADDR",
            help="Gather host candidates only on this IP address (repeatable; "
            "e.g. 127.0.0.1, which is otherwise skipped). Default: every address but loopback.",
        ),
        click.option(
            "--interval",
            default=5.0,
            show_default=True,
            type=click.FloatRange(0),
            help="Seconds between timer messages.",
        ),
        click.option(
            "--count",
            type=click.IntRange(1),
            default=None,
            help="Stop after N messages sent and N received, then exit 0.",
        ),
        click.option(
            "--connect-timeout",
            default=30.0,
            show_default=True,
            type=click.FloatRange(0, min_open=True),
            help="Seconds to wait for the data channel to open.",
        ),
        click.option(
            "--log-level",
            type=click.Choice(LOG_LEVELS),
            default="warning",
            show_default=True,
            help="Logging threshold (logs go to stderr).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _config(opts: dict[str, Any]) -> PeerConfig:
    try:
        ice = IceSettings(
            servers=tuple(opts["ice_servers"]),
            username=opts["ice_username"],
            credential=opts["ice_credential"],
            transport_policy=opts["ice_transport_policy"],
            host_addresses=tuple(opts["host_addresses"]) or None,
        )
    except PeerError as exc:
        raise click.UsageError(str(exc)) from None
    return PeerConfig(
        signal_url=opts["signal_url"], ice=ice, connect_timeout=opts["connect_timeout"]
    )


def _run(main: Coroutine[Any, Any, None], log_level: str) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(main)
    except PeerError as exc:
        _fail(exc)
    except BaseExceptionGroup as group:  # raised through a TaskGroup
        expected = group.subgroup(PeerError)
        if expected is None:
            raise
        _fail(_first_leaf(expected))
    except KeyboardInterrupt:
        sys.exit(130)


def _first_leaf(group: BaseExceptionGroup[PeerError]) -> PeerError:
    first = group.exceptions[0]
    return first if isinstance(first, PeerError) else _first_leaf(first)  # nested group


def _fail(exc: PeerError) -> None:
    """One clear line on stderr and exit status 1."""
    click.echo(f"rtc-peer: error: {exc}", err=True)
    sys.exit(1)


def _echo(line: str) -> None:
    click.echo(line)


@click.group()
@click.version_option(package_name="rtc-signal")
def main() -> None:
    """rtc-peer: WebRTC data-channel peers (aiortc) using rtc-signal signaling."""


@main.command()
@click.option("--id", "peer_id", required=True, help="The ID to register and be called by.")
@_common_options
def answer(peer_id: str, **opts: Any) -> None:
    """Register as ID and answer every caller (until interrupted, or --count)."""
    config = _config(opts)
    interval, count = opts["interval"], opts["count"]

    async def on_call(c: Call) -> None:
        await timer(c.channel, "answer", interval, count, _echo)

    def on_registered(url: str) -> None:
        # A status line, on stderr so that stdout carries only messages.
        click.echo(f"rtc-peer: registered as {peer_id!r} on {url}, waiting for callers", err=True)

    async def serve() -> None:
        peer = AnswerPeer(config, peer_id, on_registered)
        await peer.serve(on_call, max_calls=1 if count else None)

    _run(serve(), opts["log_level"])


@main.command()
@click.option("--target", required=True, help="The answer peer's ID to call.")
@click.option("--id", "peer_id", default=None, help="Our own ID (default: offer-<random>).")
@_common_options
def offer(target: str, peer_id: str | None, **opts: Any) -> None:
    """Call the answer peer TARGET and exchange timer messages."""
    config = _config(opts)
    interval, count = opts["interval"], opts["count"]

    async def run() -> None:
        async with call(config, target, peer_id or new_offer_id()) as c:
            await timer(c.channel, "offer", interval, count, _echo)

    _run(run(), opts["log_level"])


if __name__ == "__main__":
    main()
