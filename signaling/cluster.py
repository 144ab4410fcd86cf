"""A node of a signaling cluster: the asyncio layer between the router and Redis.

``rtc-signal serve --redis URL`` runs one :class:`Cluster` next to the
server. Redis is the cluster's shared registry and message bus:

- ``rtc:answer:ID`` / ``rtc:offer:ID`` = ``"NODE DIGEST"``: who holds an ID
  (DIGEST: a hash of the answer peer's resume key, or ``-``). Claimed
  atomically by a Lua script (:data:`CLAIM`): free, ours, or held by a
  node that is no longer alive: taken; held by a live node: 409, unless the
  same resume key asks (the peer moved to this node: it takes the ID and
  the old node is told, ``T``).
- ``rtc:alive:NODE``: the node's heartbeat, a key with a TTL refreshed
  every ``heartbeat`` seconds. A node that stops (SIGKILL, a lost host)
  loses its IDs when that key expires: a claim checks it, so there is no
  per-ID TTL to refresh. ``rtc:ids:NODE`` lists the node's keys so that a
  live node can sweep a dead node's keys (``rtc:nodes``: the nodes).
- ``rtc:node:NODE``: the node's pub/sub channel. A frame for a peer on
  another node is published there by the :data:`FORWARD` script (which
  looks the holder up and checks it is alive, in one round trip), as a
  JSON header line and the original frame's bytes; the receiving node hands
  it to its peer and publishes the outcome (0 or 404) back to the sender's
  node, which then acks the sender (``R``).

- Rooms: ``rtc:room:R`` (hash member -> node) and ``rtc:roomseq:R`` (sorted
  set member -> join seq, from the counter ``rtc:joins``) are a room's
  members, cluster-wide; ``rtc:rooms:NODE`` lists the node's ("R\nmember").
  A Join is one script (:data:`ROOM_JOIN`): members of dead nodes leave
  first, then the ID and the size limit are checked, the member is added and
  a Presence ``join`` is published to every other node with members in R;
  it returns the members before it, oldest first. A Leave (:data:`ROOM_LEAVE`)
  and the sweep of a dead node publish ``leave`` alike. A bus Presence
  message is ``["P", event, room, member, node, seq]`` and an empty body.

Why pub/sub rather than streams: signaling frames are only useful to a
peer connected now; a node that is gone has no peer to deliver to, and the
sender must hear 404 at once rather than after a replay. Pub/sub delivers
in order per publisher, costs no memory in Redis, and each node has one
channel, so fan-out is never wasted.

Faults: Redis unreachable at start is :class:`ClusterError`; lost while
running, the node keeps serving its own peers, cross-node requests and new
registrations get 503 (logged once per outage), and it reconnects with a
capped exponential backoff, then claims its live IDs again and drops the
keys it released meanwhile. Every Redis call has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtc_signal.signaling.actions import (
    CLAIMED,
    CONFLICT,
    NOT_FOUND,
    OK,
    SERVICE_UNAVAILABLE,
    TAKEN,
    UNAVAILABLE,
    RoomOutcome,
)
from rtc_signal.signaling.logtext import clip

log = logging.getLogger(__name__)

#: KEYS[1] the ID's key; ARGV: node, resume digest. Returns 1 (claimed), 0
#: (taken) or the name of the live node it was taken from (same resume key).
CLAIM = """
local v = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ' ' .. ARGV[2]
local moved = 1
if v and v ~= mine then
  local holder, digest = string.match(v, '^(%S+) (%S+)$')
  if holder and holder ~= ARGV[1] and redis.call('EXISTS', 'rtc:alive:' .. holder) == 1 then
    if ARGV[2] == '-' or digest ~= ARGV[2] then return 0 end
    moved = holder
  end
end
redis.call('SET', KEYS[1], mine)
redis.call('SADD', 'rtc:ids:' .. ARGV[1], KEYS[1])
return moved
"""

#: KEYS[1] the ID's key; ARGV[1] node: delete it if it is still ours.
RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^%S+') == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', 'rtc:ids:' .. ARGV[1], KEYS[1])
return 1
"""

#: KEYS[1] the target's key; ARGV[1] the message. Publishes it to the
#: holder's channel if the holder is alive; returns the receivers (0: none).
FORWARD = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local holder = string.match(v, '^%S+')
if redis.call('EXISTS', 'rtc:alive:' .. holder) == 0 then return 0 end
return redis.call('PUBLISH', 'rtc:node:' .. holder, ARGV[1])
"""

#: Lua helpers of the room scripts: a Presence event to every node with
#: members in the room but ``skip``; a member's leave (and its event).
_ROOM_LUA = """
local function publish_event(room, event, member, node, seq, skip)
  local msg = cjson.encode({'P', event, room, member, node, seq}) .. '\\n'
  local sent = {[skip] = true}
  for _, holder in ipairs(redis.call('HVALS', 'rtc:room:' .. room)) do
    if not sent[holder] then
      sent[holder] = true
      redis.call('PUBLISH', 'rtc:node:' .. holder, msg)
    end
  end
end
local function drop_member(room, member, node)
  redis.call('HDEL', 'rtc:room:' .. room, member)
  redis.call('ZREM', 'rtc:roomseq:' .. room, member)
  redis.call('SREM', 'rtc:rooms:' .. node, room .. '\\n' .. member)
  publish_event(room, 'leave', member, node, 0, node)
end
"""

#: ARGV room, member, node, the size limit. Returns 409 (ID taken in the
#: room), 503 (full), or {seq, member, node, seq, ...}: the member's join
#: seq, then the members before it, oldest first.
ROOM_JOIN = (
    _ROOM_LUA
    + """
local room, member, node, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local hkey, zkey = 'rtc:room:' .. room, 'rtc:roomseq:' .. room
local held = redis.call('HGETALL', hkey)
for i = 1, #held, 2 do
  if held[i + 1] ~= node and redis.call('EXISTS', 'rtc:alive:' .. held[i + 1]) == 0 then
    drop_member(room, held[i], held[i + 1])
  end
end
if redis.call('HEXISTS', hkey, member) == 1 then return 409 end
if redis.call('HLEN', hkey) >= max then return 503 end
local seq = redis.call('INCR', 'rtc:joins')
local before = redis.call('ZRANGE', zkey, 0, -1, 'WITHSCORES')
publish_event(room, 'join', member, node, seq, node)
redis.call('HSET', hkey, member, node)
redis.call('ZADD', zkey, seq, member)
redis.call('SADD', 'rtc:rooms:' .. node, room .. '\\n' .. member)
local out = {seq}
for i = 1, #before, 2 do
  out[#out + 1] = before[i]
  out[#out + 1] = redis.call('HGET', hkey, before[i]) or ''
  out[#out + 1] = before[i + 1]
end
return out
"""
)

#: ARGV room, member, node: the member leaves if it is still the node's.
ROOM_LEAVE = (
    _ROOM_LUA
    + """
local room, member, node = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', 'rtc:room:' .. room, member) == node then
  drop_member(room, member, node)
end
redis.call('SREM', 'rtc:rooms:' .. node, room .. '\\n' .. member)
return 1
"""
)

#: ARGV room, member, node, seq: put a live member back (Redis lost it), unless taken.
ROOM_REJOIN = """
local room, member, node = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HSETNX', 'rtc:room:' .. room, member, node) == 0 then return 0 end
redis.call('ZADD', 'rtc:roomseq:' .. room, ARGV[4], member)
redis.call('SADD', 'rtc:rooms:' .. node, room .. '\\n' .. member)
if tonumber(redis.call('GET', 'rtc:joins') or '0') < tonumber(ARGV[4]) then
  redis.call('SET', 'rtc:joins', ARGV[4])
end
return 1
"""

#: ARGV[1] this node. Deletes the keys of nodes whose heartbeat expired
#: (only those still theirs) and their room members (Presence ``leave``
#: to the other nodes); returns how many nodes were swept.
SWEEP = (
    _ROOM_LUA
    + """
local swept = 0
for _, node in ipairs(redis.call('SMEMBERS', 'rtc:nodes')) do
  if node ~= ARGV[1] and redis.call('EXISTS', 'rtc:alive:' .. node) == 0 then
    for _, key in ipairs(redis.call('SMEMBERS', 'rtc:ids:' .. node)) do
      local v = redis.call('GET', key)
      if v and string.match(v, '^%S+') == node then redis.call('DEL', key) end
    end
    redis.call('DEL', 'rtc:ids:' .. node)
    for _, entry in ipairs(redis.call('SMEMBERS', 'rtc:rooms:' .. node)) do
      local room, member = string.match(entry, '^([^\\n]*)\\n(.*)$')
      if room and redis.call('HGET', 'rtc:room:' .. room, member) == node then
        drop_member(room, member, node)
      end
    end
    redis.call('DEL', 'rtc:rooms:' .. node)
    redis.call('SREM', 'rtc:nodes', node)
    swept = swept + 1
  end
end
return swept
"""
)

#: the longest wait for one Redis command (or pipeline)
REDIS_TIMEOUT = 2.0
#: the reconnect backoff: first delay, and the cap it doubles up to
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0


def _call(callback: Callable[[Any], None], result: Any) -> None:
    """Run a command's callback; a bug in one must not stop the writer."""
    try:
        callback(result)
    except Exception:
        log.exception("a cluster callback failed")


class ClusterError(Exception):
    """Redis cannot be used (at start: unreachable, or not Redis)."""


@dataclass
class ClusterStats:
    """Plain counters (for /metrics, later)."""

    #: bus messages received (frames and replies from other nodes)
    messages_in: int = 0
    #: bus messages sent (frames and replies to other nodes)
    messages_out: int = 0
    #: Redis calls that failed (timeouts, lost connections, refusals)
    redis_errors: int = 0
    #: times Redis was lost while running
    outages: int = 0


def key(kind: str, peer_id: str) -> str:
    return f"rtc:{kind}:{peer_id}"


def resume_digest(resume: str | None) -> str:
    """What Redis keeps of a resume key: a hash (it is a credential)."""
    if not resume:
        return "-"
    return hashlib.sha256(resume.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _utf8(value: str) -> bytes:
    """A member ID for Redis (any str, even one a binary frame smuggled in)."""
    return value.encode("utf-8", "surrogatepass")


def pack(header: list[Any], frame: bytes | str = b"") -> bytes:
    """A bus message: one JSON line, then the frame's bytes untouched."""
    body = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def unpack(message: bytes) -> tuple[list[Any], bytes]:
    head, _, body = message.partition(b"\n")
    header = json.loads(head)
    if not isinstance(header, list) or not header:
        raise ValueError("not a bus message")
    return header, body


#: (kind, source ID, target ID, origin node, frame) from another node: the code
#: of its delivery (0, 403, 404)
FrameHandler = Callable[[str, str, str, str, bytes | str], int]
#: (event, room, member, its node, its join seq): a member elsewhere joined or left
PresenceHandler = Callable[[str, str, str, str, int], None]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _room_outcome(result: Any) -> RoomOutcome:
    """A :data:`ROOM_JOIN` result as the router takes it."""
    if isinstance(result, BaseException):
        return UNAVAILABLE
    if isinstance(result, int):
        return CONFLICT if result == CONFLICT else SERVICE_UNAVAILABLE
    seq, rest = int(result[0]), result[1:]
    before = [
        (_text(rest[i]), _text(rest[i + 1]), int(float(rest[i + 2])))
        for i in range(0, len(rest) - 2, 3)
    ]
    return seq, before


class Cluster:
    """This node's link to the cluster's Redis (see the module docstring).

    The server sets the callbacks: ``on_frame`` hands a frame from another
    node to a local peer and returns 0, 403 or 404; ``on_moved`` forgets an
    answer ID whose peer resumed on another node; ``live_ids`` lists the
    (kind, ID, resume key) this node holds, to claim again after an outage.
    """

    def __init__(
        self,
        url: str,
        node: str,
        heartbeat: float = 1.0,
        ttl: float = 5.0,
        reply_timeout: float = 5.0,
    ) -> None:
        if " " in node or not node:
            raise ValueError("a node ID must be non-empty, without spaces")
        self.url = url
        self.node = node
        self.heartbeat = heartbeat
        self.ttl = ttl
        self.reply_timeout = reply_timeout
        self.stats = ClusterStats()
        self.on_frame: FrameHandler = lambda *_: NOT_FOUND
        self.on_moved: Callable[[str], None] = lambda _: None
        self.live_ids: Callable[[], list[tuple[str, str, str | None]]] = list
        self.on_presence: PresenceHandler = lambda *_: None
        #: this node's room members (room, member, seq), to put back after an outage
        self.live_members: Callable[[], list[tuple[str, str, int]]] = list
        self._channel = f"rtc:node:{node}"
        self._redis: Any = None
        self._up = False
        self._outbox: list[tuple[str, tuple[Any, ...], Callable[[Any], None] | None]] = []
        self._wake = asyncio.Event()
        self._requests = itertools.count(1)
        #: forwards awaiting the other node's reply: request -> (done, deadline)
        self._pending: dict[int, tuple[Callable[[int], None], float]] = {}
        self._task: asyncio.Task[None] | None = None
        #: close() has begun: the supervisor stops instead of reconnecting
        self._closing = False
        self._connected = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Whether Redis is reachable and this node is subscribed (for /readyz)."""
        return self._up

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis (ClusterError if it cannot be reached) and run."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        try:
            self._redis = aioredis.Redis.from_url(
                self.url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                retry_on_timeout=False,
            )
        except ValueError as exc:
            raise ClusterError(f"bad Redis URL {self.url!r}: {exc}") from None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT * 2):
                await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            await self._redis.aclose()
            raise ClusterError(f"cannot reach Redis at {self.url}: {exc or 'timeout'}") from None
        self._task = asyncio.create_task(self._supervise())
        try:
            async with asyncio.timeout(REDIS_TIMEOUT * 3):
                await self._connected.wait()
        except TimeoutError:
            await self.close()
            raise ClusterError(f"cannot join the cluster on Redis at {self.url}") from None
        log.info("node %s joined the cluster on Redis %s", self.node, self.url)

    async def close(self) -> None:
        """Leave: release this node's IDs and heartbeat, stop (bounded)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            # Not ``await self._task``: redis-py (8.2) may wait, uncancellably,
            # for a command cancelled mid-flight; the task is waited for a
            # bounded time, then its connections are dropped to free it.
            done, _ = await asyncio.wait({self._task}, timeout=REDIS_TIMEOUT)
            if not done and self._redis is not None:
                log.warning("node %s: the cluster link is slow to stop; dropping it", self.node)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(REDIS_TIMEOUT):
                        await self._redis.connection_pool.disconnect(inuse_connections=True)
                await asyncio.wait({self._task}, timeout=REDIS_TIMEOUT)
            self._task = None
        if self._redis is None:
            return
        if self._up:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REDIS_TIMEOUT):
                    keys = await self._redis.smembers(f"rtc:ids:{self.node}")
                    entries = await self._redis.smembers(f"rtc:rooms:{self.node}")
                    pipe = self._redis.pipeline(transaction=False)
                    for k in keys:
                        pipe.eval(RELEASE, 1, k, self.node)
                    for entry in entries:  # (its members leave: Presence to the others)
                        room, _, member = entry.partition(b"\n")
                        pipe.eval(ROOM_LEAVE, 0, room, member, self.node)
                    pipe.delete(
                        f"rtc:alive:{self.node}", f"rtc:ids:{self.node}", f"rtc:rooms:{self.node}"
                    )
                    pipe.srem("rtc:nodes", self.node)
                    await pipe.execute()
        self._up = False
        self._fail_pending()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._redis.aclose()
        self._redis = None

    # -- what the server asks -------------------------------------------------

    def claim(
        self, kind: str, peer_id: str, resume: str | None, done: Callable[[str], None]
    ) -> None:
        """Claim ``peer_id``; ``done`` gets CLAIMED, TAKEN or UNAVAILABLE."""
        if not self._up:  # (never called back from within the caller)
            asyncio.get_running_loop().call_soon(done, UNAVAILABLE)
            return

        def claimed(result: Any) -> None:
            if isinstance(result, BaseException):
                done(UNAVAILABLE)
            elif result == 0:
                done(TAKEN)
            else:
                if isinstance(result, bytes):  # the peer resumed here: tell its old node
                    holder = result.decode()
                    log.info(
                        "answer peer %s resumed here from node %s", clip(peer_id), clip(holder)
                    )
                    self._send("pub", (f"rtc:node:{holder}", pack(["T", kind, peer_id])), None)
                done(CLAIMED)

        self._send("claim", (key(kind, peer_id), self.node, resume_digest(resume)), claimed)

    def release(self, kind: str, peer_id: str) -> None:
        """``peer_id`` is no longer ours (lost if Redis is down: the
        reconnect drops what is not live any more)."""
        if self._up:
            self._send("release", (key(kind, peer_id), self.node), None)

    def forward(
        self,
        kind: str,
        source_id: str,
        target_id: str,
        node: str | None,
        frame: bytes | str,
        done: Callable[[int], None],
    ) -> None:
        """Publish ``frame`` for ``target_id`` (of ``kind``) on ``node`` (None:
        its holder's); ``done`` gets the outcome: 0, 403, 404 or 503."""
        if not self._up:
            asyncio.get_running_loop().call_soon(done, SERVICE_UNAVAILABLE)
            return
        request = next(self._requests)
        message = pack(
            ["F", self.node, request, kind, source_id, target_id, isinstance(frame, str)], frame
        )

        # Pending before it is sent: the other node's reply may be read
        # before this node's writer hears back from its own PUBLISH.
        self._pending[request] = (done, time.monotonic() + self.reply_timeout)

        def published(result: Any) -> None:
            if isinstance(result, BaseException):
                code = SERVICE_UNAVAILABLE
            elif result == 0:  # no live node holds it
                code = NOT_FOUND
            else:
                return  # the other node replies
            if self._pending.pop(request, None) is not None:
                done(code)

        if node is None:
            self._send("forward", (key(kind, target_id), message), published)
        else:
            self._send("pub", (f"rtc:node:{node}", message), published)

    def locate(self, kind: str, peer_id: str, done: Callable[[str | None], None]) -> None:
        """The node that holds ``peer_id`` (of ``kind``) for ``done``; None if
        nobody does or Redis cannot say (a hint: a node may lose it meanwhile)."""
        if not self._up:
            asyncio.get_running_loop().call_soon(done, None)
            return

        def found(result: Any) -> None:
            if isinstance(result, bytes):
                done(result.decode("utf-8", "replace").partition(" ")[0])
            else:
                done(None)

        self._send("get", (key(kind, peer_id),), found)

    def room_join(
        self, room: str, member: str, max_size: int, done: Callable[[RoomOutcome], None]
    ) -> None:
        """Join ``member`` to ``room`` cluster-wide (:data:`ROOM_JOIN`); ``done``
        gets the outcome (see :data:`~signaling.actions.RoomOutcome`)."""
        if not self._up:
            asyncio.get_running_loop().call_soon(done, UNAVAILABLE)
            return
        args = (room, _utf8(member), self.node, max_size)
        self._send("room_join", args, lambda result: done(_room_outcome(result)))

    def room_leave(self, room: str, member: str) -> None:
        """``member`` left ``room`` here (lost if Redis is down: the reconnect
        drops the members that are not live any more)."""
        if self._up:
            self._send("room_leave", (room, _utf8(member), self.node), None)

    # -- Redis ------------------------------------------------------------------

    def _send(self, op: str, args: tuple[Any, ...], done: Callable[[Any], None] | None) -> None:
        """Queue a command for the writer (one pipeline per batch, in order)."""
        self._outbox.append((op, args, done))
        self._wake.set()

    async def _supervise(self) -> None:
        """Run connected; on a Redis error go down, back off, and again."""
        from redis.exceptions import RedisError

        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._run_connected()
                return
            except Exception as exc:  # (an ExceptionGroup from the TaskGroup, mostly)
                if self._closing:  # (the cancellation of close(), swallowed)
                    return
                errors = exc.exceptions if isinstance(exc, ExceptionGroup) else [exc]
                first = errors[0]
                if not isinstance(first, RedisError | OSError | TimeoutError):
                    log.error("node %s: cluster link failed", self.node, exc_info=first)
                self.stats.redis_errors += 1
                if self._up:
                    self.stats.outages += 1
                    log.warning(
                        "node %s lost Redis (%s): cross-node requests and new registrations "
                        "get 503 until it is back",
                        self.node,
                        clip(str(first) or type(first).__name__),
                    )
                self._up = False
                self._fail_pending()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _run_connected(self) -> None:
        redis = self._redis
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await pubsub.subscribe(self._channel)
                await self._beat(redis)
            await self._reclaim(redis)
            recovered = self.stats.outages > 0
            self._up = True
            self._connected.set()
            if recovered:
                log.warning("node %s is back on Redis; its peers are claimed again", self.node)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(pubsub))
                tasks.create_task(self._write(redis))
                tasks.create_task(self._heartbeat(redis))
        finally:
            # bounded: redis-py's close of a connection cancelled mid-read can
            # wait on it for good, and a node's shutdown must end
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REDIS_TIMEOUT):
                    await pubsub.aclose()

    async def _beat(self, redis: Any) -> None:
        pipe = redis.pipeline(transaction=False)
        pipe.set(f"rtc:alive:{self.node}", str(time.time()), px=int(self.ttl * 1000))
        pipe.sadd("rtc:nodes", self.node)
        await pipe.execute()

    async def _reclaim(self, redis: Any) -> None:
        """Claim every live ID again (Redis may have lost them) and release
        the keys this node let go of while Redis was unreachable."""
        live = self.live_ids()
        async with asyncio.timeout(REDIS_TIMEOUT * 5):
            known = {k.decode() for k in await redis.smembers(f"rtc:ids:{self.node}")}
            pipe = redis.pipeline(transaction=False)
            live_keys = set()
            for kind, peer_id, resume in live:
                live_keys.add(key(kind, peer_id))
                pipe.eval(CLAIM, 1, key(kind, peer_id), self.node, resume_digest(resume))
            for stale in known - live_keys:
                pipe.eval(RELEASE, 1, stale, self.node)
            results = await pipe.execute()
        lost = [peer_id for (_, peer_id, _), ok in zip(live, results, strict=False) if ok == 0]
        if lost:
            log.warning(
                "node %s: %d IDs were claimed by other nodes while Redis was unreachable "
                "(two peers now use them): %s",
                self.node,
                len(lost),
                ", ".join(clip(i) for i in lost[:10]),
            )
        if live:
            log.info("node %s claimed its %d live IDs", self.node, len(live))
        await self._rejoin(redis)

    async def _rejoin(self, redis: Any) -> None:
        """Put this node's live room members back (Redis may have lost them)
        and let go of the members that left while Redis was unreachable."""
        live = self.live_members()
        async with asyncio.timeout(REDIS_TIMEOUT * 5):
            known = set(await redis.smembers(f"rtc:rooms:{self.node}"))
            pipe = redis.pipeline(transaction=False)
            live_entries = set()
            for room, member, seq in live:
                live_entries.add(room.encode() + b"\n" + _utf8(member))
                pipe.eval(ROOM_REJOIN, 0, room, _utf8(member), self.node, seq)
            for stale in known - live_entries:
                room_name, _, member_id = stale.partition(b"\n")
                pipe.eval(ROOM_LEAVE, 0, room_name, member_id, self.node)
            await pipe.execute()
        if live:
            log.info("node %s put its %d room members back", self.node, len(live))

    async def _heartbeat(self, redis: Any) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._beat(redis)
                # every beat: a dead node's room members are seen leaving one
                # heartbeat after its key expires (a few commands per node)
                swept = await redis.eval(SWEEP, 0, self.node)
                if swept:
                    log.info("swept the IDs of %d dead nodes", swept)
            self._expire_pending()

    async def _write(self, redis: Any) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            pipe = redis.pipeline(transaction=False)
            for op, args, _ in batch:
                if op == "pub":
                    pipe.publish(*args)
                elif op == "forward":
                    pipe.eval(FORWARD, 1, *args)
                elif op == "claim":
                    pipe.eval(CLAIM, 1, *args)
                elif op == "room_join":
                    pipe.eval(ROOM_JOIN, 0, *args)
                elif op == "room_leave":
                    pipe.eval(ROOM_LEAVE, 0, *args)
                elif op == "get":
                    pipe.get(*args)
                else:
                    pipe.eval(RELEASE, 1, *args)
            self.stats.messages_out += sum(op in ("pub", "forward") for op, _, _ in batch)
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    results = await pipe.execute(raise_on_error=False)
            except BaseException as exc:
                for _, _, done in batch:
                    if done is not None:
                        _call(done, exc)
                raise
            for (_, _, done), result in zip(batch, results, strict=True):
                if done is not None:
                    _call(done, result)

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            self.stats.messages_in += 1
            try:
                self._dispatch(message["data"])
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                log.warning("node %s: bad bus message ignored: %s", self.node, clip(exc))
            except Exception:  # a bug in a handler must not stop the bus
                log.exception("node %s: handling a bus message failed", self.node)

    def _dispatch(self, data: bytes) -> None:
        header, body = unpack(data)
        kind = header[0]
        if kind == "F":
            _, origin, request, target_kind, source_id, target_id, text = header
            frame: bytes | str = body.decode("utf-8", "surrogatepass") if text else body
            code = self.on_frame(target_kind, source_id, target_id, origin, frame)
            self._send("pub", (f"rtc:node:{origin}", pack(["R", request, code])), None)
        elif kind == "R":
            _, request, code = header
            pending = self._pending.pop(int(request), None)
            if pending is not None:
                pending[0](int(code))
        elif kind == "T":
            self.on_moved(str(header[2]))
        elif kind == "P":
            _, event, room, member, node, seq = header
            self.on_presence(str(event), str(room), str(member), str(node), int(seq))

    def _expire_pending(self) -> None:
        now = time.monotonic()
        late = [r for r, (_, deadline) in self._pending.items() if deadline < now]
        for request in late:
            done, _ = self._pending.pop(request)
            _call(done, SERVICE_UNAVAILABLE)

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for done, _ in pending.values():
            _call(done, SERVICE_UNAVAILABLE)
        batch, self._outbox = self._outbox, []
        for _, _, then in batch:
            if then is not None:
                _call(then, ConnectionError("Redis is unreachable"))


__all__ = ["CLAIMED", "OK", "TAKEN", "UNAVAILABLE", "Cluster", "ClusterError", "ClusterStats"]
