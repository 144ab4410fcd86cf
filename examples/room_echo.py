"""A room member that echoes, using the library API (``join``) rather than the CLI.

Joins a room, greets every member it connects to, and sends each message it
receives back to its sender only (``echo: <text>``); prints every event.
With ``--count N`` it leaves after N messages, else it stays until Ctrl-C:

    rtc-signal serve &
    python examples/room_echo.py --room lobby --id echo --host-address 127.0.0.1 &
    rtc-peer join --room lobby --host-address 127.0.0.1 --interval 0.5 --count 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from rtc_signal.peers import (
    IceSettings,
    MemberConnected,
    MemberJoined,
    MemberLeft,
    PeerConfig,
    PeerError,
    RoomMessage,
    join,
)


async def echo(config: PeerConfig, room_name: str, member_id: str, count: int | None) -> None:
    async with join(config, room_name, member_id) as room:
        print(f"joined {room.name} as {room.peer_id}; members: {room.members}", flush=True)
        echoed = 0
        async for event in room:
            match event:
                case MemberJoined(member):
                    print(f"{member} joined", flush=True)
                case MemberConnected(member):
                    print(f"connected to {member}", flush=True)
                    await room.send_to(member, f"hello {member}, this is {room.peer_id}")
                case MemberLeft(member):
                    print(f"{member} left", flush=True)
                case RoomMessage(sender, text):
                    print(f"{sender}: {text}", flush=True)
                    await room.send_to(sender, f"echo: {text}")
                    echoed += 1
                    if count is not None and echoed >= count:
                        return  # leaving the block delivers the echoes, then leaves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--room", default="lobby", help="room to join")
    parser.add_argument("--id", default="echo", help="our member ID")
    parser.add_argument("--signal", default="ws://127.0.0.1:18080", help="signaling URL")
    parser.add_argument("--host-address", action="append", help="host candidate address")
    parser.add_argument("--count", type=int, default=None, help="leave after N messages")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    config = PeerConfig(
        signal_url=args.signal,
        ice=IceSettings(host_addresses=tuple(args.host_address) if args.host_address else None),
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(echo(config, args.room, args.id, args.count))
    except PeerError as exc:
        print(f"room_echo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
