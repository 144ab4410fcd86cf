"""Unit tests of signaling.limits: the per-connection token bucket (time passed in)."""

from __future__ import annotations

import pytest

from rtc_signal.signaling.limits import ALLOW, CLOSE, REFUSE, RateLimit


def test_burst_then_rate() -> None:
    """A full bucket lets ``burst`` messages through at once, then ``rate`` per second."""
    bucket = RateLimit(rate=10, burst=5).bucket(0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [ALLOW] * 5 + [REFUSE]
    assert bucket.take(0.05) == REFUSE  # half a token
    assert bucket.take(0.15) == ALLOW  # one token back (10/s)
    assert bucket.take(0.15) == REFUSE


def test_bucket_never_holds_more_than_burst() -> None:
    bucket = RateLimit(rate=10, burst=3).bucket(0.0)
    results = [bucket.take(1000.0) for _ in range(4)]
    assert results == [ALLOW, ALLOW, ALLOW, REFUSE]


def test_sustained_excess_closes_after_the_grace_period() -> None:
    """A client refused continuously for ``grace`` seconds gets CLOSE."""
    bucket = RateLimit(rate=10, burst=2, grace=5).bucket(0.0)
    t, verdicts = 0.0, []
    while t < 6:  # 1000 messages/s, 100x the rate
        verdicts.append((t, bucket.take(t)))
        t += 0.001
    closes = [at for at, v in verdicts if v == CLOSE]
    assert closes, "a flood never got CLOSE"
    first_refusal = next(at for at, v in verdicts if v == REFUSE)
    assert closes[0] - first_refusal == pytest.approx(5, abs=0.01)
    # messages within the rate still get through during the excess
    assert sum(v == ALLOW for at, v in verdicts if 1 <= at < 2) == pytest.approx(10, abs=1)


def test_occasional_bursts_are_refused_but_never_closed() -> None:
    """Bursts over the limit separated by quiet periods reset the grace clock."""
    bucket = RateLimit(rate=10, burst=5, grace=1).bucket(0.0)
    for second in range(20):
        verdicts = [bucket.take(float(second)) for _ in range(8)]  # 3 over, every second
        assert verdicts == [ALLOW] * 5 + [REFUSE] * 3
    assert bucket.take(20.0) == ALLOW


def test_slightly_over_the_rate_for_longer_than_grace_is_closed() -> None:
    """1.5x the rate, never quiet long enough to refill: closed once grace has passed."""
    bucket = RateLimit(rate=10, burst=2, grace=3).bucket(0.0)
    verdicts = [(i / 15, bucket.take(i / 15)) for i in range(15 * 10)]
    closes = [at for at, v in verdicts if v == CLOSE]
    assert closes and 3 <= closes[0] < 4


@pytest.mark.parametrize(("rate", "burst", "grace"), [(0, 1, 1), (-1, 1, 1), (1, 0, 1), (1, 1, -1)])
def test_bad_limits_are_refused(rate: float, burst: float, grace: float) -> None:
    with pytest.raises(ValueError):
        RateLimit(rate, burst, grace)
