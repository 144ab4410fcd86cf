"""Helper processes for ``benchmarks/datachannel.py`` (started by it; not run by hand).

Two modes, both on loopback only:

- ``--id ID --signal URL --host-address 127.0.0.1``: a *sink* answer peer
  (library API, :class:`peers.AnswerPeer`). On each call it follows this
  little protocol on the data channel: a text message ``expect N`` starts a
  transfer of N bytes; binary messages are counted; once N bytes have
  arrived it replies ``got N`` (text), so the sender can time the transfer
  up to the acknowledgement of its last byte. Any other text message is
  echoed back. Prints ``sink: registered`` on stderr when ready.
- ``--baseline``: the same sink and an echo over a plain loopback TCP
  socket and over a websockets connection, for the baselines. Prints
  ``baseline: tcp PORT ws PORT`` on stderr when listening.
  TCP: a line ``expect N`` then N raw bytes, reply ``got N``; or a line
  ``echo`` and then every byte is sent back. WebSocket: path ``/sink`` (same
  messages as the data channel) or ``/echo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from rtc_signal.peers import AnswerPeer, Call, IceSettings, PeerConfig, PeerError

HOST = "127.0.0.1"


# -- data-channel sink ------------------------------------------------------------


async def _sink_call(call: Call) -> None:
    channel = call.channel
    expected: int | None = None
    received = 0
    async for message in channel:
        if isinstance(message, bytes):
            received += len(message)
            if expected is not None and received >= expected:
                await channel.send(f"got {received}")
                expected, received = None, 0
        elif message.startswith("expect "):
            expected, received = int(message.split()[1]), 0
        else:
            await channel.send(message)


def run_sink(args: argparse.Namespace) -> int:
    hosts = tuple(args.host_address or (HOST,))
    config = PeerConfig(signal_url=args.signal, ice=IceSettings(host_addresses=hosts))
    peer = AnswerPeer(
        config,
        args.id,
        on_registered=lambda url: print(f"sink: registered on {url}", file=sys.stderr, flush=True),
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(peer.serve(_sink_call))
    except PeerError as exc:
        print(f"sink: error: {exc}", file=sys.stderr)
        return 1
    return 0


# -- baselines: TCP and websockets --------------------------------------------------


async def _tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            words = line.split()
            if words[:1] == [b"echo"]:
                while data := await reader.read(1 << 16):
                    writer.write(data)
                    await writer.drain()
                return
            if words[:1] != [b"expect"]:
                return
            remaining = int(words[1])
            while remaining > 0:
                data = await reader.read(min(remaining, 1 << 18))
                if not data:
                    return
                remaining -= len(data)
            writer.write(f"got {int(words[1])}\n".encode())
            await writer.drain()
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _ws_client(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else "/"
    expected: int | None = None
    received = 0
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            if path == "/echo":
                await ws.send(message)
            elif isinstance(message, bytes):
                received += len(message)
                if expected is not None and received >= expected:
                    await ws.send(f"got {received}")
                    expected, received = None, 0
            elif message.startswith("expect "):
                expected, received = int(message.split()[1]), 0


async def run_baseline() -> None:
    tcp = await asyncio.start_server(_tcp_client, HOST, 0)
    async with serve(_ws_client, HOST, 0, compression=None, max_size=1 << 22) as ws:
        tcp_port = tcp.sockets[0].getsockname()[1]
        ws_port = next(iter(ws.sockets)).getsockname()[1]
        print(f"baseline: tcp {tcp_port} ws {ws_port}", file=sys.stderr, flush=True)
        async with tcp:
            await tcp.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="store_true", help="TCP/websockets baselines")
    parser.add_argument("--id", default="sink", help="ID to register")
    parser.add_argument("--signal", default="ws://127.0.0.1:18080", help="signaling URL")
    parser.add_argument("--host-address", action="append", help="host candidate address")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.baseline:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_baseline())
        return 0
    return run_sink(args)


if __name__ == "__main__":
    sys.exit(main())
