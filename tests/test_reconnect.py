"""Pure parts of reconnecting: the backoff schedule, the resume key, and the
router holding a dropped answer peer's ID for it (no network, no clock)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from rtc_signal.peers.reconnect import Backoff, ReconnectPolicy, new_resume_key, register_path
from rtc_signal.proto import Command, decode, encode_request
from rtc_signal.signaling.router import CONFLICT, OK, Held, Path, Router, Send
from rtc_signal.signaling.server import MAX_RESUME_KEY, resume_key

PEER = "answer-1"
KEY, OTHER_KEY = "key-aaaa", "key-bbbb"


def test_backoff_caps_double_from_the_base_up_to_the_max() -> None:
    """Attempt n's delay is bounded by min(max, base * 2**n)."""
    policy = ReconnectPolicy(base_delay=0.5, max_delay=4.0)
    assert [policy.cap(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.cap(10_000) == 4.0  # no overflow however long the outage


def test_backoff_delays_are_full_jitter_within_their_cap() -> None:
    """Each delay is uniform in [0, cap]: spread over the whole range, never above it."""
    policy = ReconnectPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(1)
    per_attempt: list[list[float]] = [[] for _ in range(5)]
    for _ in range(400):
        backoff = Backoff(policy, rng)
        for n in range(5):
            per_attempt[n].append(backoff.next_delay())
    for n, delays in enumerate(per_attempt):
        cap = policy.cap(n)
        assert all(0.0 <= d <= cap for d in delays)
        # full jitter: both the low and the high quarter of [0, cap] occur
        assert min(delays) < cap / 4 and max(delays) > 3 * cap / 4


def test_backoff_without_jitter_waits_exactly_the_cap() -> None:
    """jitter=False (the benchmark's baseline): the delays are the caps themselves."""
    backoff = Backoff(ReconnectPolicy(base_delay=0.5, max_delay=2.0, jitter=False))
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]


def test_backoff_reset_starts_the_schedule_again() -> None:
    """After a successful reconnect the next outage starts from the base delay."""
    backoff = Backoff(ReconnectPolicy(base_delay=0.25, max_delay=10.0), random.Random(2))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.attempt == 6
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() <= 0.25


@pytest.mark.parametrize(("base", "top", "factor"), [(0, 1, 2), (2, 1, 2), (-1, 1, 2), (1, 2, 0.5)])
def test_reconnect_policy_refuses_nonsense(base: float, top: float, factor: float) -> None:
    """A zero/negative base, a base above the max or a shrinking factor is refused."""
    with pytest.raises(ValueError):
        ReconnectPolicy(base_delay=base, max_delay=top, factor=factor)


def test_resume_key_travels_as_a_query_parameter_the_server_reads_back() -> None:
    """register_path() puts the key on /register; the server's parser gets it back."""
    key = new_resume_key()
    assert len(key) <= MAX_RESUME_KEY and key != new_resume_key()
    assert register_path(None) == "/register"
    path = register_path(key)
    assert path.startswith("/register?resume=")
    assert resume_key(path) == key
    assert resume_key("/register") is None
    assert resume_key("/register?token=x") is None  # other parameters are not ours


@pytest.mark.parametrize(
    "path", ["/register?resume=", "/register?resume=a&resume=b", "/register?resume=" + "k" * 65]
)
def test_server_refuses_malformed_resume_keys(path: str) -> None:
    """Empty, repeated or over-long keys are a ValueError (the handshake gets 400)."""
    with pytest.raises(ValueError):
        resume_key(path)


# -- the router's hold ------------------------------------------------------------


def _register(router: Router, conn: int, peer_id: str = PEER) -> tuple[int, str]:
    actions = router.receive(conn, encode_request(Command.INIT, peer_id, ""))
    assert len(actions) == 1 and isinstance(actions[0], Send)
    response = decode(actions[0].frame).response
    return response.code, response.msg


def _registered(router: Router, conn: int, resume: str | None) -> None:
    router.connect(conn, Path.REGISTER, resume)
    assert _register(router, conn) == (OK, "ok")


def test_dropped_peer_with_a_key_has_its_id_held_for_that_key_only() -> None:
    """While held: another key (or none) gets 409, the same key gets the ID back."""
    router = Router()
    _registered(router, 1, KEY)
    held = router.disconnect(1)
    assert held is not None and held == Held(PEER, held.token)
    assert router.answer_peers() == [] and router.held_peers() == [PEER]
    router.connect(2, Path.REGISTER, OTHER_KEY)
    code, msg = _register(router, 2)
    assert code == CONFLICT and "held" in msg
    router.connect(3, Path.REGISTER)
    assert _register(router, 3)[0] == CONFLICT
    router.connect(4, Path.REGISTER, KEY)
    assert _register(router, 4) == (OK, "ok")
    assert router.answer_peers() == [PEER] and router.held_peers() == []
    # the grace timer of the old hold fires later: it must not free the live ID
    assert router.release(held) is False
    assert router.answer_peers() == [PEER]


def test_the_409_for_a_held_id_says_how_long_it_is_held() -> None:
    """The grace period the I/O layer holds the ID for is in the refusal."""
    router = Router()
    _registered(router, 1, KEY)
    assert router.disconnect(1, grace=30.0) is not None
    router.connect(2, Path.REGISTER, OTHER_KEY)
    assert _register(router, 2) == (
        CONFLICT,
        f"ID '{PEER}' is held for its reconnecting peer (up to 30 s after it dropped)",
    )


def test_release_after_the_grace_period_frees_the_id_for_anyone() -> None:
    """Once released, a registration with another key gets the ID."""
    router = Router()
    _registered(router, 1, KEY)
    held = router.disconnect(1)
    assert held is not None
    assert router.release(held) is True
    assert router.held_peers() == []
    _registered(router, 2, OTHER_KEY)
    assert router.answer_peers() == [PEER]


def test_a_stale_release_does_not_free_a_newer_hold() -> None:
    """Drop, come back, drop again: the first hold's timer leaves the second hold alone."""
    router = Router()
    _registered(router, 1, KEY)
    first = router.disconnect(1)
    _registered(router, 2, KEY)
    second = router.disconnect(2)
    assert first is not None and second is not None and first.token != second.token
    assert router.release(first) is False
    assert router.held_peers() == [PEER]
    assert router.release(second) is True


def test_no_hold_without_a_key_or_after_a_clean_close() -> None:
    """Go peers (no key) and peers that close cleanly free their ID at once."""
    router = Router()
    _registered(router, 1, None)
    assert router.disconnect(1) is None
    _registered(router, 2, KEY)
    assert router.disconnect(2, hold=False) is None
    assert router.held_peers() == []
    _registered(router, 3, OTHER_KEY)


def test_same_key_takes_over_a_connection_the_server_has_not_seen_drop() -> None:
    """A reconnect with the key replaces the old connection; the old one's close frees nothing."""
    router = Router()
    _registered(router, 1, KEY)
    router.connect(2, Path.REGISTER, OTHER_KEY)
    assert _register(router, 2)[0] == CONFLICT  # a different key may not
    _registered(router, 3, KEY)
    assert router.answer_peers() == [PEER] and router.peer_id(1) is None
    assert router.disconnect(1) is None
    assert router.answer_peers() == [PEER]
    held = router.disconnect(3)
    assert held is not None and held.peer_id == PEER


# -- command-line validation -------------------------------------------------------


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=30)


def test_rtc_peer_refuses_a_first_delay_above_the_max_delay() -> None:
    """--reconnect-delay above --reconnect-max-delay: usage error (exit 2), before connecting."""
    done = _cli(
        "rtc_signal.peers.cli", "answer", "--id", "x", "--signal", "ws://127.0.0.1:9",
        "--reconnect-delay", "5", "--reconnect-max-delay", "1",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--reconnect-delay" in done.stderr


def test_rtc_signal_refuses_a_negative_resume_grace() -> None:
    """--resume-grace must be >= 0 (0 turns holding off)."""
    done = _cli("rtc_signal.signaling.cli", "serve", "--port", "0", "--resume-grace", "-1")
    assert done.returncode == 2, done.stderr
    assert "--resume-grace" in done.stderr
