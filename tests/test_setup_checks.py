"""Set-up mistakes that used to wait out the whole connect timeout, or gave
a puzzling error, now fail at once with what to do (issue 14, item 6):

- no ICE candidate at all (no address but loopback, a --host-address that
  is not this machine's): the decision function, and a real call() that
  raises at once instead of waiting out its timeout;
- a --host-address that is not an address of this machine;
- a signaling URL given with /offer or /register, or another path the
  server does not serve (404 on the handshake).
"""

from __future__ import annotations

import pytest

from rtc_signal.peers import IceSettings, PeerConfig, PeerError, call
from rtc_signal.peers.errors import HandshakeRefused
from rtc_signal.peers.ice import check_host_addresses, no_candidate_problem
from rtc_signal.peers.signaling_client import SignalingClient, strip_endpoint
from tests.conftest import run, running_server

#: a documentation address (RFC 5737) that no interface of the test machine has
NOT_OURS = "198.51.100.77"

SDP_WITHOUT = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n"
SDP_WITH = SDP_WITHOUT + "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"


def test_a_description_with_a_candidate_has_no_problem() -> None:
    assert no_candidate_problem(SDP_WITH, IceSettings()) is None


def test_no_candidate_by_default_points_to_host_address_and_ice_servers() -> None:
    """The loopback-only host: say loopback is skipped and what to pass instead."""
    problem = no_candidate_problem(SDP_WITHOUT, IceSettings())
    assert problem is not None
    assert "no network address but loopback" in problem
    assert "--host-address 127.0.0.1" in problem
    assert "--ice-server" in problem


def test_no_candidate_names_the_host_addresses_and_ice_servers_given() -> None:
    problem = no_candidate_problem(
        SDP_WITHOUT, IceSettings(servers=("stun:127.0.0.1:3478",), host_addresses=(NOT_OURS,))
    )
    assert problem is not None
    assert f"on --host-address {NOT_OURS}" in problem
    assert "no ICE server gave one" in problem


def test_no_candidate_with_relay_policy_is_about_the_turn_server() -> None:
    settings = IceSettings(servers=("turn:127.0.0.1:3478",), transport_policy="relay")
    problem = no_candidate_problem(SDP_WITHOUT, settings)
    assert problem is not None and "TURN" in problem and "--ice-credential" in problem


def test_host_addresses_of_this_machine_pass_the_check() -> None:
    check_host_addresses(["127.0.0.1"])  # no error


def test_a_host_address_that_is_not_this_machines_is_refused() -> None:
    with pytest.raises(PeerError, match=f"{NOT_OURS} is not an address of this machine"):
        check_host_addresses(["127.0.0.1", NOT_OURS])


def test_a_call_with_no_candidate_fails_at_once_with_the_hint() -> None:
    """call() with a host address aioice cannot bind: PeerError before the offer
    goes out, far within a connect timeout it would otherwise wait out."""

    async def scenario() -> str:
        async with running_server() as server:
            config = PeerConfig(
                signal_url=server.url,
                ice=IceSettings(host_addresses=(NOT_OURS,)),
                connect_timeout=300,
            )
            with pytest.raises(PeerError) as failed:
                async with call(config, "nobody"):
                    pass
            return str(failed.value)

    message = run(scenario(), timeout=60)
    assert message.startswith(f"no ICE candidate could be gathered on --host-address {NOT_OURS}")
    assert "--host-address 127.0.0.1" in message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://127.0.0.1:18080", ("ws://127.0.0.1:18080", None)),
        ("ws://127.0.0.1:18080/", ("ws://127.0.0.1:18080/", None)),
        ("ws://127.0.0.1:18080/offer", ("ws://127.0.0.1:18080", "/offer")),
        ("wss://example.test/register/", ("wss://example.test", "/register")),
        ("wss://example.test/rtc/offer", ("wss://example.test/rtc", "/offer")),
        ("wss://example.test/rtc", ("wss://example.test/rtc", None)),  # a proxy's prefix
        ("ws://127.0.0.1:18080/offers", ("ws://127.0.0.1:18080/offers", None)),
    ],
)
def test_strip_endpoint_removes_only_a_trailing_offer_or_register(
    given: str, expected: tuple[str, str | None]
) -> None:
    assert strip_endpoint(given) == expected


def test_a_404_on_the_handshake_says_to_give_the_url_without_a_path() -> None:
    async def scenario() -> HandshakeRefused:
        async with running_server() as server:
            with pytest.raises(HandshakeRefused) as refused:
                await SignalingClient.connect(server.url + "/offer", "/offer", 10)
            return refused.value

    refused = run(scenario())
    assert refused.status == 404
    assert "/offer/offer" in str(refused)
    assert "give the server's URL without a path" in str(refused)
