"""Handing a connection to a sibling worker: the messages (pure, no I/O).

Why: with ``--workers N`` the kernel spreads connections over the workers
(SO_REUSEPORT) by a hash of their addresses, so an offer peer lands on the
same worker as the answer peer it calls only one time in N. Every other
frame of that call then crossed workers through Redis: a PUBLISH, Redis's
own work and a subscriber read per frame, which made two workers relay less
than one process (0.79x, benchmarks/cluster.py). Instead, when the first
frame of an ``/offer`` connection calls an answer peer held by a sibling
worker, the worker hands the whole TCP connection to that sibling (the
socket over a Unix socket with SCM_RIGHTS, see
:mod:`signaling.siblings`): from then on the call is local to one process.

What goes with the socket, in one message: who the connection is (its
path, the ID and room its token granted) and the bytes it sent that the
worker has read but not handled, as the client sent them: the messages held
back, framed again as client frames (masked with a zero key, which RFC 6455
allows), then the start of an incomplete frame. The sibling parses them
first, then reads the socket.

The sibling answers every handover (``taken`` or not, for instance when it
is full or closing); only once it has taken it does the first worker close
its copy of the socket, and otherwise it goes on with the connection itself.
A connection is handed over at most once.

Wire format (one SOCK_SEQPACKET message each): ``H`` + JSON header + ``\\n``
+ bytes, with the socket attached; ``R`` + JSON ``[seq, taken]``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

#: the largest handover message: a client that sent more than this before its
#: first frame was handled stays where it is (SOCK_SEQPACKET messages must fit
#: the socket buffer; a real offer peer sends one frame and waits)
MAX_HANDOVER_BYTES = 96 * 1024
#: the receive buffer for one message on a sibling link (above the largest)
RECEIVE_BUFFER = MAX_HANDOVER_BYTES + 4096
_ZERO_MASK = b"\0\0\0\0"


@dataclass(frozen=True, slots=True)
class Handover:
    """A connection offered to a sibling (the socket travels beside it)."""

    #: matches the reply to the offer, on the worker that sends it
    seq: int
    #: the request path the connection opened (``/offer``)
    path: str
    #: what its token granted at the handshake (None: no token / no room)
    allowed_id: str | None
    allowed_room: str | None
    #: the bytes the client sent that were not handled yet, as it sent them
    data: bytes


def client_frame(message: bytes | str) -> bytes:
    """``message`` as a client would frame it (FIN, masked with a zero key:
    the payload stays as it is)."""
    if isinstance(message, str):
        payload, head = message.encode(), 0x81
    else:
        payload, head = message, 0x82
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", head, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", head, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", head, 0x80 | 127, n)
    return header + _ZERO_MASK + payload


def pending_bytes(messages: list[bytes | str], partial: bytes) -> bytes:
    """What the client sent and was not handled: ``messages`` framed again,
    then the start of an incomplete frame."""
    return b"".join(client_frame(m) for m in messages) + partial


def encode_handover(handover: Handover) -> bytes:
    header = json.dumps(
        [handover.seq, handover.path, handover.allowed_id, handover.allowed_room],
        separators=(",", ":"),
    ).encode()
    return b"H" + header + b"\n" + handover.data


def encode_reply(seq: int, taken: bool) -> bytes:
    return b"R" + json.dumps([seq, taken]).encode()


def decode(message: bytes) -> Handover | tuple[int, bool]:
    """A link message: a :class:`Handover`, or a reply ``(seq, taken)``.

    ValueError if it is neither (links only join workers of one parent, so
    this is a bug, not an attack).
    """
    kind, body = message[:1], message[1:]
    if kind == b"R":
        seq, taken = json.loads(body)
        if not isinstance(seq, int) or not isinstance(taken, bool):
            raise ValueError("bad handover reply")
        return seq, taken
    if kind != b"H":
        raise ValueError(f"unknown link message {kind!r}")
    header, sep, data = body.partition(b"\n")
    if not sep:
        raise ValueError("handover without a header line")
    seq, path, allowed_id, allowed_room = json.loads(header)
    if not isinstance(seq, int) or not isinstance(path, str):
        raise ValueError("bad handover header")
    for value in (allowed_id, allowed_room):
        if value is not None and not isinstance(value, str):
            raise ValueError("bad handover grant")
    return Handover(seq, path, allowed_id, allowed_room, data)


def parse_links(spec: str) -> dict[str, int]:
    """``--sibling-links NODE=FD,...`` (set by ``--workers``) as a mapping."""
    links: dict[str, int] = {}
    for item in filter(None, spec.split(",")):
        node, sep, fd = item.rpartition("=")
        if not sep or not node or not fd.isdigit():
            raise ValueError(f"bad sibling link {item!r} (NODE=FD)")
        links[node] = int(fd)
    return links


def format_links(links: dict[str, int]) -> str:
    return ",".join(f"{node}={fd}" for node, fd in links.items())
