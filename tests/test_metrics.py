"""GET /metrics, /healthz and /readyz (issue 13, item 4): a real server,
scraped over real HTTP before and after real clients act, the values parsed
with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtc_signal.proto import Command, encode_request
from rtc_signal.signaling.counters import LatencyHistogram
from rtc_signal.signaling.limits import RateLimit
from tests.conftest import (
    WAIT,
    answer_frame,
    client,
    connect,
    eventually,
    expect_response,
    offer_frame,
    recv_envelope,
    recv_frame,
    register,
    relay_offer,
    run,
    running_server,
    start_server_process,
    stop_server_process,
    within,
)
from tests.httpclient import HttpResponse, http_request

#: (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str, token: str | None = None) -> Samples:
    """GET /metrics (200 expected) and parse it."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = await http_request(url, "GET", "/metrics", headers)
    assert response.status == 200, response
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; KeyError if the server does not expose it."""
    return samples[(name, tuple(sorted(labels.items())))]


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a sample grew; one absent before (a label value not seen yet) was 0."""
    return value(after, name, **labels) - before.get((name, tuple(sorted(labels.items()))), 0)


# -- the values move ------------------------------------------------------------


def test_a_call_moves_frames_responses_peers_bytes_and_latency() -> None:
    """Registering, an offer and its answer count in frames by command,
    forwards, responses by code, peers, connections, bytes and the latency."""

    async def main() -> None:
        async with running_server() as server:
            url = server.url
            before = await scrape(url)
            async with client(url, "/register") as alice, client(url, "/offer") as bob:
                await register(alice, "alice")
                await relay_offer(bob, alice, "bob", "alice")
                sent = answer_frame("alice", "bob")
                await alice.send(sent)
                await expect_response(alice, Command.ANSWER_RESPONSE, 0)
                assert await recv_frame(bob) == sent
                during = await scrape(url)
            after = await scrape(url)

        for command, n in (("init", 1), ("offer", 1), ("answer", 1), ("candidate", 0)):
            assert delta(before, during, "rtc_signal_frames_total", command=command) == n
        assert delta(before, during, "rtc_signal_frames_forwarded_total") == 2
        assert delta(before, during, "rtc_signal_responses_total", code="0") == 3
        assert value(during, "rtc_signal_peers", role="answer") == 1
        assert value(during, "rtc_signal_peers", role="offer") == 1
        assert value(during, "rtc_signal_calls") == 1
        for path in ("register", "offer"):
            assert value(during, "rtc_signal_connections", path=path) == 1
            assert delta(before, during, "rtc_signal_connections_accepted_total", path=path) == 1
            assert value(after, "rtc_signal_connections", path=path) == 0
        assert value(after, "rtc_signal_peers", role="answer") == 0
        assert delta(before, during, "rtc_signal_http_responses_total", status="101") == 2
        # both forwards are in the histogram, each under a second
        assert delta(before, during, "rtc_signal_forward_latency_seconds_count") == 2
        assert delta(before, during, "rtc_signal_forward_latency_seconds_bucket", le="1.0") == 2
        assert 0 < delta(before, during, "rtc_signal_forward_latency_seconds_sum") < 2
        # the frames (masked, with headers) and the handshakes went through the counters
        frames = len(offer_frame("bob", "alice")) + len(sent)
        assert delta(before, during, "rtc_signal_received_bytes_total") > frames * 2
        assert delta(before, during, "rtc_signal_sent_bytes_total") > frames * 2
        # no cluster: its counters exist and stay 0
        for direction in ("sent", "received"):
            assert value(after, "rtc_signal_cluster_messages_total", direction=direction) == 0
        assert value(after, "rtc_signal_redis_errors_total") == 0
        assert value(after, "rtc_signal_rooms") == value(after, "rtc_signal_room_members") == 0

    run(main())


def test_not_found_too_large_rate_limit_and_conflict_count_as_refusals() -> None:
    """404, 413, 409 and 429 replies each move their refusal reason and
    response code by exactly the number of replies the clients got."""

    async def main() -> None:
        limit = RateLimit(rate=0.5, burst=4, grace=30)
        async with running_server(max_frame=512, rate_limit=limit) as server:
            url = server.url
            before = await scrape(url)
            async with client(url, "/register") as alice, client(url, "/register") as other:
                await register(alice, "alice")
                await other.send(encode_request(Command.INIT, "alice", ""))
                await expect_response(other, Command.INIT_RESPONSE, 409)
            async with client(url, "/offer") as big:
                await big.send(offer_frame("bob", "alice", sdp="x" * 1024))
                await expect_response(big, Command.OFFER_RESPONSE, 413)
            codes: list[int] = []
            async with client(url, "/offer") as flood:
                for _ in range(8):  # a burst of 4 allowed: the rest get 429
                    await flood.send(offer_frame("carol", "nobody"))
                for _ in range(8):
                    codes.append((await recv_envelope(flood)).response.code)
            after = await scrape(url)

        assert set(codes) == {404, 429}, codes
        expected = {
            "not_found": ("404", codes.count(404)),
            "rate_limit": ("429", codes.count(429)),
            "too_large": ("413", 1),
            "conflict": ("409", 1),
            "forbidden": ("403", 0),
        }
        for reason, (code, n) in expected.items():
            assert delta(before, after, "rtc_signal_refusals_total", reason=reason) == n, reason
            if n:
                assert delta(before, after, "rtc_signal_responses_total", code=code) == n
        # frames refused over the rate limit never reach the router: only refusals count them
        offers = 1 + codes.count(404)
        assert delta(before, after, "rtc_signal_frames_total", command="offer") == offers
        assert delta(before, after, "rtc_signal_frames_forwarded_total") == 0

    run(main())


def test_refused_handshakes_and_handshake_timeouts_are_counted() -> None:
    """A handshake from a foreign Origin (403) and a connection that never
    sends its request (handshake timeout) count under their reasons."""

    async def main() -> None:
        async with running_server(
            allow_origins=("https://good.example",), handshake_timeout=0.5
        ) as server:
            url = server.url
            before = await scrape(url)
            with pytest.raises(Exception, match="403"):
                await connect(url, "/register", origin="https://evil.example")
            host, port = url.removeprefix("ws://").rsplit(":", 1)
            reader, writer = await within(asyncio.open_connection(host, int(port)))
            try:
                assert await within(reader.read(), WAIT) == b""  # closed by the server
            finally:
                writer.close()
            after = await scrape(url)
        assert delta(before, after, "rtc_signal_refusals_total", reason="handshake_refused") == 1
        assert delta(before, after, "rtc_signal_http_responses_total", status="403") == 1
        assert delta(before, after, "rtc_signal_refusals_total", reason="handshake_timeout") == 1

    run(main())


def test_two_servers_in_one_process_have_their_own_metrics() -> None:
    """Each server has its own registry: what happens on one is not in the other's."""

    async def main() -> None:
        async with (
            running_server() as one,
            running_server() as two,
            client(one.url, "/register") as alice,
        ):
            await register(alice, "alice")
            first, second = await scrape(one.url), await scrape(two.url)
        assert value(first, "rtc_signal_peers", role="answer") == 1
        assert value(second, "rtc_signal_peers", role="answer") == 0
        assert value(second, "rtc_signal_frames_total", command="init") == 0

    run(main())


# -- the bearer token -----------------------------------------------------------------


async def get(url: str, path: str, authorization: str | None = None) -> HttpResponse:
    headers = {} if authorization is None else {"Authorization": authorization}
    return await http_request(url, "GET", path, headers)


def test_metrics_token_is_required_when_configured() -> None:
    """With a token, /metrics is 401 without it, with a wrong one or another
    scheme, and 200 with it; the probes stay open."""

    async def main() -> None:
        async with running_server(metrics_token="s3cret-token") as server:
            url = server.url
            for authorization in (None, "Bearer wrong", "Bearer s3cret-token-x", "Basic s3cret"):
                response = await get(url, "/metrics", authorization)
                assert response.status == 401, authorization
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert b"rtc_signal" not in response.body
            assert "rtc_signal_peers" in {name for name, _ in await scrape(url, "s3cret-token")}
            assert (await get(url, "/metrics", "bearer s3cret-token")).status == 200
            assert (await get(url, "/healthz")).status == 200
            assert (await get(url, "/readyz")).status == 200

    run(main())


def test_metrics_are_open_without_a_token_and_off_with_no_metrics() -> None:
    """No token configured: anyone may scrape; metrics=False: /metrics is 404."""

    async def main() -> None:
        async with running_server() as server:
            assert (await get(server.url, "/metrics", "Bearer anything")).status == 200
        async with running_server(metrics=False) as server:
            assert (await get(server.url, "/metrics")).status == 404
            assert (await get(server.url, "/healthz")).status == 200

    run(main())


def test_cli_takes_the_metrics_token_from_the_environment() -> None:
    """RTC_SIGNAL_METRICS_TOKEN guards `rtc-signal serve`'s /metrics; --no-metrics turns it off."""
    env = {**os.environ, "RTC_SIGNAL_METRICS_TOKEN": "from-env-token"}
    proc, url = start_server_process(env=env)
    try:

        async def guarded() -> None:
            assert (await get(url, "/metrics")).status == 401
            assert (await get(url, "/metrics", "Bearer from-env-token")).status == 200

        run(guarded())
    finally:
        stop_server_process(proc)
    proc, url = start_server_process("--no-metrics")
    try:

        async def off() -> None:
            assert (await get(url, "/metrics")).status == 404
            assert (await get(url, "/readyz")).status == 200

        run(off())
    finally:
        stop_server_process(proc)


# -- the probes ------------------------------------------------------------------------


def test_healthz_and_readyz_answer_get_and_head() -> None:
    """GET: 200 with "ok" / "ready"; HEAD: the same headers, no body; POST: 405."""

    async def main() -> None:
        async with running_server() as server:
            url = server.url
            for path, body in (("/healthz", b"ok\n"), ("/readyz", b"ready\n")):
                got = await http_request(url, "GET", path)
                assert (got.status, got.body) == (200, body)
                assert got.headers["cache-control"] == "no-store"
                head = await http_request(url, "HEAD", path)
                assert (head.status, head.body) == (200, b"")
                assert head.headers["content-length"] == str(len(body))
                posted = await http_request(url, "POST", path)
                assert posted.status == 405
                assert posted.headers["allow"] == "GET, HEAD"
            head = await http_request(url, "HEAD", "/metrics")
            assert (head.status, head.body) == (200, b"")

    run(main())


def test_readyz_is_503_at_the_connection_limit() -> None:
    """With every slot but the probe's taken, /readyz is 503 (and ready 0);
    with every slot taken, the gate refuses the probe itself (503, gate_full);
    once a connection leaves, /readyz is 200 again."""

    async def main() -> None:
        async with running_server(max_connections=2) as server:
            url = server.url
            async with client(url, "/register") as held:
                await register(held, "held")
                response = await get(url, "/readyz")
                assert response.status == 503
                assert response.body == b"not ready: at the connection limit\n"
                # (the probe's slot is freed when the server sees it closed)
                await eventually(lambda: len(server._gate) == 1)
                async with client(url, "/register"):
                    refused = await get(url, "/readyz")
                    assert refused.status == 503
                    assert b"too many connections" in refused.body
            await eventually(lambda: server.router.answer_count() == 0)
            assert (await get(url, "/readyz")).status == 200
            samples = await scrape(url)
        assert value(samples, "rtc_signal_refusals_total", reason="gate_full") == 1
        assert value(samples, "rtc_signal_ready") == 1
        assert value(samples, "rtc_signal_tcp_connections_limit") == 2

    run(main())


def test_readyz_runs_every_readiness_check() -> None:
    """Draining, and any check added to readiness_checks (the hook for
    "Redis reachable" in a cluster), make /readyz 503 with the reasons."""

    async def main() -> None:
        async with running_server() as server:
            url = server.url
            server.readiness_checks.append(lambda: "redis unreachable")
            server.draining = True
            response = await get(url, "/readyz")
            assert response.status == 503
            assert response.body == b"not ready: draining; redis unreachable\n"
            assert value(await scrape(url), "rtc_signal_ready") == 0
            assert (await get(url, "/healthz")).status == 200  # alive all the same
            server.draining = False
            server.readiness_checks.pop()
            assert (await get(url, "/readyz")).status == 200

    run(main())


# -- the histogram itself ----------------------------------------------------------------


def test_latency_histogram_buckets_are_cumulative_and_inclusive() -> None:
    """A value on a bound counts in that bound's bucket; buckets accumulate to +Inf."""
    histogram = LatencyHistogram((0.001, 0.01))
    for value_, count in ((0.001, 1), (0.002, 3), (0.01, 1), (2.0, 2)):
        histogram.observe(value_, count)
    assert histogram.cumulative() == [("0.001", 1), ("0.01", 5), ("+Inf", 7)]
    assert histogram.count == 7
    assert histogram.total == pytest.approx(0.001 + 0.006 + 0.01 + 4.0)
    with pytest.raises(ValueError, match="increasing"):
        LatencyHistogram((0.01, 0.001))


def test_every_forward_is_in_the_latency_histogram_once() -> None:
    """Forwards batched in one read are each observed once: scraped while
    offers flow, the histogram's count equals the forwards so far."""

    async def main() -> None:
        async with running_server() as server:
            url = server.url
            async with client(url, "/register") as alice, client(url, "/offer") as bob:
                await register(alice, "alice")

                async def traffic() -> None:
                    for _ in range(50):
                        await bob.send(offer_frame("bob", "alice"))
                    for _ in range(50):
                        await expect_response(bob, Command.OFFER_RESPONSE, 0)

                _, *scraped = await within(
                    asyncio.gather(traffic(), scrape(url), scrape(url), scrape(url))
                )
                scraped.append(await scrape(url))
        for samples in scraped:
            forwarded = value(samples, "rtc_signal_frames_forwarded_total")
            observed = value(samples, "rtc_signal_forward_latency_seconds_count")
            assert forwarded == observed
        assert value(scraped[-1], "rtc_signal_forward_latency_seconds_count") == 50

    run(main())
