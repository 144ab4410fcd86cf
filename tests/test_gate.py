"""The accept gate (signaling/gate.py) on its own: pure bookkeeping, no sockets."""

from __future__ import annotations

from rtc_signal.signaling.gate import AcceptGate, Refusal, Verdict


def test_no_limit_accepts_everything() -> None:
    """Without limits every connection is accepted and nothing is evicted."""
    gate: AcceptGate[str] = AcceptGate(None)
    assert all(gate.accept(f"c{n}", "10.0.0.1") == Verdict(True) for n in range(500))
    assert len(gate) == 500
    assert gate.per_address == {}  # no per-address limit: nothing tracked


def test_at_the_limit_the_oldest_pending_is_evicted() -> None:
    """At --max-connections the oldest connection still sending its request makes room."""
    gate: AcceptGate[str] = AcceptGate(2)
    gate.accept("slow-1")
    gate.accept("slow-2")
    assert gate.accept("new") == Verdict(True, evict="slow-1")
    assert list(gate.pending) == ["slow-2", "new"]
    assert len(gate) == 2


def test_admitted_connections_are_never_evicted() -> None:
    """A connection whose request arrived is not evicted: the newest pending one goes
    only after every older pending one, and admitted ones stay."""
    gate: AcceptGate[str] = AcceptGate(3)
    for conn in ("a", "b", "c"):
        gate.accept(conn)
    gate.admit("a")
    assert gate.accept("d").evict == "b"
    assert gate.accept("e").evict == "c"
    assert "a" in gate.admitted


def test_full_of_admitted_refuses_at_once() -> None:
    """When every slot holds a request, a new connection is refused as FULL."""
    gate: AcceptGate[str] = AcceptGate(2)
    for conn in ("a", "b"):
        gate.accept(conn)
        gate.admit(conn)
    assert gate.accept("c") == Verdict(False, refusal=Refusal.FULL)
    assert len(gate) == 2 and "c" not in gate.pending


def test_close_frees_a_slot_and_is_idempotent() -> None:
    """Closing frees its slot; closing twice (evicted, then lost) changes nothing more."""
    gate: AcceptGate[str] = AcceptGate(1, per_ip=1)
    gate.accept("a", "10.0.0.1")
    gate.admit("a")
    gate.close("a")
    gate.close("a")
    assert len(gate) == 0 and gate.per_address == {} and gate.address_of == {}
    assert gate.accept("b", "10.0.0.1").accept


def test_admit_of_an_unknown_connection_is_ignored() -> None:
    """Admitting a connection the gate does not count (refused, evicted) adds nothing."""
    gate: AcceptGate[str] = AcceptGate(1)
    gate.admit("ghost")
    assert len(gate) == 0


def test_per_ip_refuses_the_address_at_its_share_only() -> None:
    """--max-connections-per-ip: the address at its limit is refused as PER_IP while
    another address still gets in."""
    gate: AcceptGate[str] = AcceptGate(None, per_ip=2)
    assert gate.accept("a1", "10.0.0.1").accept
    assert gate.accept("a2", "10.0.0.1").accept
    assert gate.accept("a3", "10.0.0.1") == Verdict(False, refusal=Refusal.PER_IP)
    assert gate.accept("b1", "10.0.0.2").accept
    assert gate.per_address == {"10.0.0.1": 2, "10.0.0.2": 1}
    gate.close("a1")
    assert gate.accept("a4", "10.0.0.1").accept


def test_per_ip_refusal_evicts_nobody() -> None:
    """A connection over its address's share is refused without evicting anyone's
    pending connection, even with the global limit reached."""
    gate: AcceptGate[str] = AcceptGate(2, per_ip=1)
    gate.accept("other", "10.0.0.2")
    gate.accept("mine", "10.0.0.1")
    assert gate.accept("mine-2", "10.0.0.1") == Verdict(False, refusal=Refusal.PER_IP)
    assert list(gate.pending) == ["other", "mine"]


def test_eviction_releases_the_evicted_address_share() -> None:
    """An evicted slow connection no longer counts against its address."""
    gate: AcceptGate[str] = AcceptGate(1, per_ip=1)
    gate.accept("slow", "10.0.0.1")
    assert gate.accept("new", "10.0.0.2") == Verdict(True, evict="slow")
    assert gate.per_address == {"10.0.0.2": 1}
    assert gate.address_of == {"new": "10.0.0.2"}
    gate.close("slow")  # its connection_lost comes later: no double count
    assert gate.per_address == {"10.0.0.2": 1}


def test_unknown_address_is_not_limited_per_ip() -> None:
    """A connection without a source address (not an IP socket) passes the per-IP
    limit and is not tracked per address."""
    gate: AcceptGate[str] = AcceptGate(None, per_ip=1)
    assert gate.accept("a", None).accept
    assert gate.accept("b", None).accept
    assert gate.per_address == {} and gate.address_of == {}


def test_tables_are_empty_after_every_connection_closed() -> None:
    """Nothing outlives its connection: after a churn of accepts, admits, evictions,
    refusals and closes, every table of the gate is empty."""
    gate: AcceptGate[int] = AcceptGate(10, per_ip=4)
    live: list[int] = []
    for n in range(1_000):
        verdict = gate.accept(n, f"10.0.0.{n % 7}")
        if verdict.evict is not None:
            live.remove(verdict.evict)
            gate.close(verdict.evict)
        if verdict.accept:
            live.append(n)
            if n % 3:
                gate.admit(n)
        if n % 5 == 0 and live:
            gate.close(live.pop(0))
        assert len(gate) <= 10
        assert all(count <= 4 for count in gate.per_address.values())
    for conn in live:
        gate.close(conn)
    assert (gate.pending, gate.admitted, gate.address_of, gate.per_address) == ({}, set(), {}, {})
