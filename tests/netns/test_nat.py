"""Peers across NATs, TURN and loss in a private Internet made of network
namespaces (tests/netns/lab.py): real coturn (the README's configuration),
iptables MASQUERADE, `rtc-peer` and `rtc-signal` processes. Root only;
skipped elsewhere with the reason. Figures are printed (``pytest -s``)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.netns.conftest import UNAVAILABLE, Peers, World, make_world
from tests.netns.lab import (
    PUB_ADDR,
    TURN_PASSWORD,
    TURN_PORT,
    TURN_USER,
    WAN_ADDR,
    Internet,
    Lab,
    Proc,
    wait_for,
)

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

STUN = ["--ice-server", f"stun:{WAN_ADDR}:{TURN_PORT}"]
TURN = [
    "--ice-server",
    f"turn:{WAN_ADDR}:{TURN_PORT}?transport=udp",
    "--ice-username",
    TURN_USER,
    "--ice-credential",
    TURN_PASSWORD,
]
RELAY = ["--ice-transport-policy", "relay"]
COMMON = ["--log-level", "info", "--connect-timeout", "20"]
_PAIR = re.compile(r"data channel open with '[^']*' via (\w+) (\S+) -> (\w+) (\S+)")
#: under 10 % loss a set-up's tail is long: DTLS (1 s, doubling) and SCTP
#: retransmit lost handshake flights, and CI once saw 18.5 s from the answer
#: to the offerer's open channel, after which the answer peer's 20 s ran out
#: before the caller's data channel reached it. These tests are about what
#: crosses the loss, so their peers get more time to set up.
LOSSY = ["--connect-timeout", "60"]
LOSS_RULE = [
    "FORWARD", "-p", "udp", "-m", "statistic", "--mode", "random", "--probability", "0.1",
    "-j", "DROP",
]  # fmt: skip


@dataclass
class Pair:
    local_type: str
    local: str
    remote_type: str
    remote: str

    def __str__(self) -> str:
        return f"{self.local_type} {self.local} -> {self.remote_type} {self.remote}"


def pair_of(proc: Proc) -> Pair:
    """The ICE pair a peer logged when its data channel opened."""
    match = _PAIR.search(proc.stderr())
    assert match is not None, f"{proc.name} logged no selected pair:\n{proc.stderr()[-3000:]}"
    return Pair(*match.groups())


def numbers(text: str, prefix: str) -> list[int]:
    return [int(n) for n in re.findall(rf"^recv {prefix}-(\d+)$", text, re.MULTILINE)]


@dataclass
class Where:
    """A peer's namespace and its (only) host address."""

    ns: str
    addr: str


def public(world: World) -> Where:
    return Where(world.net.pub, PUB_ADDR)


def behind_nat(world: World, i: int) -> Where:
    return Where(world.net.privs[i], Internet.priv_addr(i))


def answer_peer(peers: Peers, at: Where, peer_id: str, *args: str) -> Proc:
    proc = peers.start(
        at.ns, f"answer-{peer_id}", "answer", "--id", peer_id, "--host-address", at.addr,
        *COMMON, *args,
    )  # fmt: skip
    wait_for(
        lambda: "rtc-peer: registered as" in proc.stderr(), "the answer peer to register", proc
    )
    return proc


def timer_call(
    peers: Peers,
    answer_at: Where,
    offer_at: Where,
    ice: list[str],
    name: str,
    count: int = 5,
    interval: str = "0.05",
) -> tuple[Proc, Proc, float]:
    """A timer call, ``count`` messages each way: both exit 0, every message
    arrived in order. Returns (answer, offer, seconds from starting the offer
    process to its exit)."""
    timer = ["--count", str(count), "--interval", interval]
    answer = answer_peer(peers, answer_at, name, *ice, *timer)
    started = time.monotonic()
    offer = peers.start(
        offer_at.ns, f"offer-{name}", "offer", "--target", name, "--host-address", offer_at.addr,
        *COMMON, *ice, *timer,
    )  # fmt: skip
    assert offer.wait(90) == 0, offer.stderr()[-3000:]
    elapsed = time.monotonic() - started
    assert answer.wait(30) == 0, answer.stderr()[-3000:]
    assert numbers(offer.stdout(), "answer") == list(range(1, count + 1))
    assert numbers(answer.stdout(), "offer") == list(range(1, count + 1))
    return answer, offer, elapsed


_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO rtc_signal\.peers\.session: "


def connect_seconds(offer: Proc) -> float:
    """From sending the offer to the channel being open, from the offer's log stamps."""
    log = offer.stderr()
    stamps = []
    for what in ("offer sent to", "data channel open with"):
        match = re.search(_STAMP + what, log, re.MULTILINE)
        assert match is not None, f"no {what!r} line in:\n{log[-2000:]}"
        stamps.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"))
    return (stamps[1] - stamps[0]).total_seconds()


def report(what: str, answer: Proc, offer: Proc, elapsed: float) -> None:
    print(
        f"\n{what}: offer {pair_of(offer)}; answer {pair_of(answer)}; "
        f"connected in {connect_seconds(offer):.3f} s; offer process {elapsed:.2f} s"
    )


def test_peer_behind_nat_reaches_public_peer_with_coturn_as_stun(
    world: World, peers: Peers
) -> None:
    """NAT + STUN: connected on a host/server-reflexive pair, never relayed."""
    answer, offer, elapsed = timer_call(peers, public(world), behind_nat(world, 0), STUN, "stun")
    report("NAT -> public, STUN", answer, offer, elapsed)
    assert pair_of(offer).local_type == "host"  # aioice pairs reflexive candidates on their base
    seen_by_public = pair_of(answer)
    # the public peer sees the NAT's outside address (reflexive), not the private one
    assert seen_by_public.remote_type in ("srflx", "prflx"), seen_by_public
    assert seen_by_public.remote.startswith(Internet.nat_outside(0) + ":"), seen_by_public


def test_forced_relay_through_coturn_with_long_term_credentials(world: World, peers: Peers) -> None:
    """--ice-transport-policy relay with --ice-username/--ice-credential: relay at both ends."""
    ice = [*TURN, *RELAY]
    answer, offer, elapsed = timer_call(peers, public(world), behind_nat(world, 0), ice, "relay")
    report("forced relay", answer, offer, elapsed)
    for proc in (answer, offer):
        pair = pair_of(proc)
        assert pair.local_type == "relay" and pair.local.startswith(WAN_ADDR + ":"), pair


def test_wrong_turn_credential_fails_at_once_naming_the_turn_settings(
    world: World, peers: Peers
) -> None:
    """Relay only with a bad password: no candidate at all, so the offer exits 1
    at once (not after its 300 s connect timeout) saying to check the TURN settings."""
    ice = [*TURN[:-1], "wrong", *RELAY, "--connect-timeout", "300"]
    answer_peer(peers, public(world), "badcred", *TURN, *RELAY)
    offer = peers.start(
        world.net.privs[0], "offer-badcred", "offer", "--target", "badcred",
        "--host-address", Internet.priv_addr(0), "--count", "1", *ice,
    )  # fmt: skip
    assert offer.wait(60) == 1
    stderr = offer.stderr()
    assert "no TURN server gave one" in stderr, stderr[-2000:]
    assert "--ice-credential" in stderr


@pytest.mark.parametrize("policy", ["all", "relay"])
def test_both_peers_behind_their_own_nat_connect_through_turn(
    world: World, peers: Peers, policy: str
) -> None:
    """Two MASQUERADE NATs facing each other: full ICE (STUN+TURN) and relay only connect."""
    ice = [*STUN, *TURN, *(RELAY if policy == "relay" else [])]
    answer, offer, elapsed = timer_call(
        peers, behind_nat(world, 1), behind_nat(world, 0), ice, f"nat2-{policy}"
    )
    report(f"both behind NAT, policy {policy}", answer, offer, elapsed)
    if policy == "relay":
        assert pair_of(offer).local_type == "relay" and pair_of(answer).local_type == "relay"


def test_symmetric_nats_and_a_wan_without_default_route_still_relay(tmp_path: Path) -> None:
    """The set-up that failed before (438 then 400 to ChannelBind): NATs without a
    firewall (symmetric), a TURN server with no default route. With the README's
    coturn configuration (denied-peer-ip) the peers connect through the relay."""
    lab = Lab(tmp_path)
    try:
        world = make_world(lab, wan_default_route=False, firewall=False, symmetric=True)
        peers = Peers(world)
        try:
            answer, offer, elapsed = timer_call(
                peers, behind_nat(world, 1), behind_nat(world, 0), [*STUN, *TURN], "symmetric"
            )
        finally:
            peers.stop()
        report("symmetric NATs, WAN without default route", answer, offer, elapsed)
        # Through a relay: a side's own relay candidate, or the other's (each
        # side may send from its host candidate to the other's relay address,
        # seen once under load: host -> relay on both sides)
        types = {
            t for p in (pair_of(offer), pair_of(answer)) for t in (p.local_type, p.remote_type)
        }
        assert "relay" in types, (pair_of(offer), pair_of(answer))
        # coturn refused to relay to the private peers (403) instead of dropping the allocation
        assert "denied in the range: 100.64.0.0-100.127.255.255" in world.coturn.stdout()
    finally:
        lab.close()
    assert lab.leftovers() == []


@pytest.fixture
def lossy_wan(world: World) -> Iterator[None]:
    """10 % of the UDP packets the WAN forwards are dropped (both directions).

    FORWARD, not OUTPUT: a DROP in OUTPUT makes coturn's own sendto() fail
    with EPERM, which it treats as fatal (NETWORK-TESTS.md).
    """
    world.lab.iptables(world.net.wan, "-I", *LOSS_RULE)
    try:
        yield
    finally:
        world.lab.iptables(world.net.wan, "-D", *LOSS_RULE)


def dropped(world: World) -> int:
    """Packets the loss rule has dropped so far."""
    listing = world.lab.sh(world.net.wan, "iptables", "-w", "-L", "FORWARD", "-v", "-n", "-x")
    for line in listing.splitlines():
        if "statistic" in line:
            return int(line.split()[0])
    raise AssertionError(f"no loss rule in:\n{listing}")


def test_1000_timer_messages_cross_10_percent_loss_all_and_in_order(
    world: World, peers: Peers, lossy_wan: None
) -> None:
    """NAT peer <-> public peer, the WAN drops 10 % of UDP: nothing lost or reordered."""
    before = dropped(world)
    answer, offer, elapsed = timer_call(
        peers,
        public(world),
        behind_nat(world, 0),
        [*STUN, *LOSSY],
        "loss",
        count=1000,
        interval="0.002",
    )
    lost = dropped(world) - before
    report(
        f"1000 timer messages each way, 10 % loss ({lost} packets dropped)", answer, offer, elapsed
    )
    assert lost > 0  # the loss really was on the path


def test_5_mib_file_crosses_10_percent_loss_with_the_right_sha256(
    world: World, peers: Peers, lossy_wan: None, tmp_path: Path
) -> None:
    """`rtc-peer send` of 5 MiB through NAT and 10 % loss: whole, same SHA-256."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(5 << 20))
    answer_peer(peers, public(world), "files", *STUN, *LOSSY, "--accept-files", str(inbox))
    before = dropped(world)
    started = time.monotonic()
    at = behind_nat(world, 0)
    sender = peers.start(
        at.ns, "send", "send", str(payload), "--target", "files", "--host-address", at.addr,
        *COMMON, *STUN, *LOSSY,
    )  # fmt: skip
    assert sender.wait(180) == 0, sender.stderr()[-3000:]
    elapsed = time.monotonic() - started
    received = inbox / payload.name
    assert received.exists(), sorted(p.name for p in inbox.iterdir())
    digest = hashlib.sha256(received.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(payload.read_bytes()).hexdigest()
    print(
        f"\n5 MiB under 10 % loss: {elapsed:.1f} s ({5 / elapsed:.2f} MiB/s), "
        f"{dropped(world) - before} packets dropped, pair {pair_of(sender)}"
    )


def test_lab_close_removes_namespaces_links_rules_and_processes(tmp_path: Path) -> None:
    """Clean-up pin: after close(), no namespace of the lab and none of its processes is left."""
    lab = Lab(tmp_path)
    try:
        a, b = lab.ns("a"), lab.ns("b")
        lab.link(a, "x", "198.51.100.9/30", b, "y", "198.51.100.10/30")
        lab.iptables(a, "-A", "INPUT", "-p", "udp", "-j", "DROP")
        sleeper = lab.spawn(a, "sleeper", ["sleep", "60"])
        assert sorted(lab.leftovers()) == sorted([a, b])
    finally:
        lab.close()
    assert lab.leftovers() == []
    assert sleeper.popen.poll() is not None
