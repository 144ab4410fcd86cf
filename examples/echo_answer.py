"""An echo answer peer, using the library API rather than the CLI.

Registers an ID with the signaling server and sends every message it
receives on a data channel straight back, for every caller, until Ctrl-C:

    rtc-signal serve &
    python examples/echo_answer.py --id echo --host-address 127.0.0.1 &
    rtc-peer offer --target echo --host-address 127.0.0.1 --interval 0.5 --count 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from rtc_signal.peers import AnswerPeer, Call, IceSettings, PeerConfig, PeerError


async def echo(call: Call) -> None:
    """Send each message back on the channel it came from, until it closes."""
    async for message in call.channel:
        await call.channel.send(message)
    logging.info("call from %s ended", call.remote_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--id", default="echo", help="ID to register")
    parser.add_argument("--signal", default="ws://127.0.0.1:18080", help="signaling URL")
    parser.add_argument("--host-address", action="append", help="host candidate address")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    config = PeerConfig(
        signal_url=args.signal,
        ice=IceSettings(host_addresses=tuple(args.host_address) if args.host_address else None),
    )
    peer = AnswerPeer(
        config,
        args.id,
        on_registered=lambda url: print(f"echo: registered on {url}", file=sys.stderr, flush=True),
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(peer.serve(echo))
    except PeerError as exc:
        print(f"echo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
