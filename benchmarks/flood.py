"""Fairness: other clients' relay latency while one client floods the server.

Usage: ``python benchmarks/flood.py [--runs 3] [--duration 6] [--pairs 20] [--rate 20]``

One ``rtc-signal serve`` process (loopback) per configuration: the rate limit
off (``--rate-limit 0``) and on (the default, 100 messages/s, burst 200). In
each, twice: without and with a flooder.

- The *others* (a load-generator process): ``--pairs`` pairs of an answer
  peer (registered) and an offer peer that sends the Go demo's real Offer to
  it, one at a time, ``--rate`` per second per pair (well under the limit).
  Relay latency = from the offer peer's write to the answer peer's read of
  the forwarded frame (one process, one clock). Also counted: offers not
  delivered within 2 s.
- The *flooder* (its own process): one offer peer that writes the same Offer
  to its own registered sink as fast as TCP takes it (writing whenever its
  socket accepts more, reading and discarding every reply), and reconnects
  at once whenever the server closes it, as a persistent attacker would.

Runs are interleaved; each cell is the median over runs, the ratio column the
median of per-run ratios against the same configuration without flooder. On
2 cores the flooder, the server and the load generator share the CPUs: the
"no flooder" baseline does not pay for that, so part of the latency increase
is the load generator's own scheduling delay, which the rate limit cannot
remove.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    HOST,
    LeanWs,
    Sample,
    _start,
    children,
    client_frame,
    connect,
    cpu_seconds,
    golden_offer_body,
    machine,
    machine_busy,
    raise_fd_limit,
    readline_by,
    rtc_request,
    rtc_response,
    rtc_signal_argv,
    set_deadline,
    stop_children,
    table,
)

CONFIGS = {
    "rate limit off": ("--rate-limit", "0"),
    "rate limit on (100/s, burst 200)": (),
}
ACK = rtc_response(103, 0, "ok")
#: seconds the others' pairs may take to set up under the flood
SETUP_BOUND = 120
LOST_AFTER = 2.0

# -- the others: paced pairs, relay latency -------------------------------------------


class Answer(LeanWs):
    """An answer peer: hands each delivery's arrival time to its offer peer."""

    partner: Offerer | None = None

    def on_frame(self, buf: bytearray, start: int, end: int) -> None:
        if self.partner is not None:
            self.partner.delivered(time.perf_counter())


class Offerer(LeanWs):
    """An offer peer with one offer in flight, sent every 1/rate s."""

    def __init__(self, host: str, port: int, resource: str) -> None:
        super().__init__(host, port, resource)
        self.frame = b""
        self.sent_at: float | None = None
        self.latencies: list[float] = []
        #: offers never acknowledged (not ``lost``: LeanWs's future of that name)
        self.unanswered = 0
        self.errors = 0

    def on_frame(self, buf: bytearray, start: int, end: int) -> None:
        if bytes(buf[start:end]) != ACK:
            self.errors += 1

    def send(self) -> None:
        if self.sent_at is not None:  # the last one never arrived
            if time.perf_counter() - self.sent_at < LOST_AFTER:
                return
            self.unanswered += 1
        self.sent_at = time.perf_counter()
        self.write(self.frame)

    def delivered(self, at: float) -> None:
        if self.sent_at is not None:
            self.latencies.append(at - self.sent_at)
            self.sent_at = None


async def registered(cls: type[LeanWs], port: int, peer_id: str) -> Any:
    ws = await connect(lambda: cls(HOST, port, "/register"), HOST, port)
    reply = await ws.request(client_frame(rtc_request(1, peer_id, "", None)))
    assert reply == rtc_response(101, 0, "ok"), reply
    ws.stop_capturing()
    return ws


async def probe(cfg: dict[str, Any]) -> dict[str, Any]:
    port, pairs, rate = cfg["port"], cfg["pairs"], cfg["rate"]
    offerers: list[Offerer] = []
    setup_started = time.perf_counter()
    for i in range(pairs):
        answer = await registered(Answer, port, f"other-answer-{i}")
        offerer = await connect(lambda: Offerer(HOST, port, "/offer"), HOST, port)
        offerer.stop_capturing()
        offerer.frame = client_frame(
            rtc_request(3, f"other-offer-{i}", f"other-answer-{i}", golden_offer_body())
        )
        answer.partner = offerer
        offerers.append(offerer)
    setup_s = time.perf_counter() - setup_started

    async def pace(offerer: Offerer, phase: float, until: float) -> None:
        await asyncio.sleep(phase)
        while time.perf_counter() < until:
            offerer.send()
            await asyncio.sleep(1 / rate)

    await asyncio.sleep(cfg["warmup"])
    server_pid = cfg["server_pid"]
    s0, m0, t0 = cpu_seconds(server_pid), machine_busy(), time.perf_counter()
    until = t0 + cfg["duration"]
    await asyncio.gather(*(pace(o, i / (rate * pairs), until) for i, o in enumerate(offerers)))
    elapsed = time.perf_counter() - t0
    s1, m1 = cpu_seconds(server_pid), machine_busy()
    await asyncio.sleep(0.2)  # the last ones in flight
    latencies = sorted(x for o in offerers for x in o.latencies)
    lost = sum(o.unanswered + (o.sent_at is not None) for o in offerers)
    for o in offerers:
        o.close()
    return {
        "latencies": latencies,
        "lost": lost,
        "errors": sum(o.errors for o in offerers),
        "server_cpu": (s1 - s0) / elapsed,
        "machine_cpu": (m1 - m0) / elapsed,
        "setup_s": setup_s,
    }


# -- the flooder ----------------------------------------------------------------------


class Flooder(LeanWs):
    """Writes frames whenever its socket accepts more; counts the replies."""

    def __init__(self, host: str, port: int, resource: str) -> None:
        super().__init__(host, port, resource)
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.acks = 0
        self.refusals = 0

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def on_frame(self, buf: bytearray, start: int, end: int) -> None:
        if end - start == len(ACK) and buf.startswith(ACK, start):
            self.acks += 1
        else:
            self.refusals += 1


async def flood(cfg: dict[str, Any]) -> dict[str, Any]:
    port = cfg["port"]
    sink = await registered(LeanWs, port, "flood-sink")
    frame = client_frame(rtc_request(3, "flooder", "flood-sink", golden_offer_body()))
    chunk = frame * 64
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    sent = acks = refusals = closes = 0
    flowing = False
    started = time.monotonic()
    deadline = time.monotonic() + cfg["max_seconds"]
    while not stop.is_set() and time.monotonic() < deadline:
        ws = await connect(lambda: Flooder(HOST, port, "/offer"), HOST, port)
        ws.stop_capturing()
        assert ws.transport is not None
        while not stop.is_set() and not ws.lost.done() and time.monotonic() < deadline:
            if not ws.can_write.is_set():
                waiters: list[asyncio.Future[Any]] = [
                    asyncio.ensure_future(ws.can_write.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                await asyncio.wait(
                    [*waiters, ws.lost], timeout=1, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in waiters:  # none left pending, one per blocked write
                    waiter.cancel()
                continue
            ws.write(chunk)
            sent += 64
            await asyncio.sleep(0)  # let the replies be read
            if not flowing and ws.acks + ws.refusals:
                flowing = True
                print("flowing", flush=True)  # the orchestrator starts the probe now
        acks, refusals = acks + ws.acks, refusals + ws.refusals
        if ws.lost.done() and not stop.is_set():
            closes += 1
        ws.close()
    sink.close()
    seconds = time.monotonic() - started
    return {
        "sent": sent,
        "acks": acks,
        "refusals": refusals,
        "closes": closes,
        "seconds": seconds,
    }


# -- the orchestrator -------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def worker_argv(role: str, cfg: dict[str, Any]) -> list[str]:
    return [sys.executable, __file__, "--worker", json.dumps({"role": role, **cfg})]


def run_cell(config: tuple[str, ...], flooded: bool, args: argparse.Namespace) -> dict[str, Any]:
    server = _start("rtc-signal", rtc_signal_argv(*config))
    flooder: subprocess.Popen[bytes] | None = None
    try:
        cfg = {
            "port": server.port,
            "server_pid": server.pid,
            "pairs": args.pairs,
            "rate": args.rate,
            "warmup": args.warmup,
            "duration": args.duration,
            # (outlives the others' set-up, which a saturated server made
            # take 30 s and more: the flood must still run in their window)
            "max_seconds": args.warmup + args.duration + SETUP_BOUND + 30,
        }
        if flooded:
            flooder = subprocess.Popen(
                worker_argv("flood", cfg), stdout=subprocess.PIPE, preexec_fn=raise_fd_limit
            )
            children.append(flooder)
            # flooding before the others connect: its first replies came back
            assert flooder.stdout is not None
            ready = readline_by(flooder.stdout, time.monotonic() + 30)
            if ready.strip() != b"flowing":
                raise RuntimeError(f"the flooder did not start flooding: {ready!r}")
        probe_run = subprocess.run(
            worker_argv("probe", cfg),
            capture_output=True,
            timeout=args.warmup + args.duration + SETUP_BOUND + 60,
            check=False,
        )
        if probe_run.returncode != 0:
            raise RuntimeError(
                f"probe failed: {probe_run.stderr.decode(errors='replace')[-3000:]}\n"
                f"server: {server.stderr_tail()}"
            )
        result: dict[str, Any] = json.loads(probe_run.stdout.decode().strip().splitlines()[-1])
        if flooder is not None:
            flooder.send_signal(signal.SIGTERM)
            out, _ = flooder.communicate(timeout=30)
            result["flood"] = json.loads(out.decode().strip().splitlines()[-1])
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--pairs", type=int, default=20, help="well-behaved pairs")
    parser.add_argument("--rate", type=float, default=20.0, help="offers/s of each pair")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        cfg = json.loads(args.worker)
        raise_fd_limit()
        set_deadline(cfg["warmup"] + cfg["duration"] + 60)
        job = probe if cfg["role"] == "probe" else flood
        print(json.dumps(asyncio.run(job(cfg))))
        return

    set_deadline(
        60 + args.runs * len(CONFIGS) * 2 * (args.duration + args.warmup + 8 + SETUP_BOUND)
    )
    cells: dict[tuple[str, bool], dict[str, Sample]] = {}
    ratios: dict[tuple[str, bool], dict[str, Sample]] = {}
    started = time.monotonic()
    try:
        for run in range(args.runs):
            for name, config in CONFIGS.items():
                base: dict[str, float] = {}
                for flooded in (False, True):
                    res = run_cell(config, flooded, args)
                    lat = res["latencies"]
                    p50, p99 = percentile(lat, 0.5) * 1e3, percentile(lat, 0.99) * 1e3
                    values = {
                        "p50": p50,
                        "p99": p99,
                        "max": (lat[-1] if lat else float("nan")) * 1e3,
                        "delivered": len(lat) / args.duration,
                        "lost": float(res["lost"]),
                        "server_cpu": res["server_cpu"] * 100,
                        "setup": res["setup_s"],
                        "others_cpu": (res["machine_cpu"] - res["server_cpu"]) * 100,
                    }
                    flood_stats = res.get("flood")
                    if flood_stats:
                        life = flood_stats["seconds"]  # (rates over the flooder's life)
                        values["flood_sent"] = flood_stats["sent"] / life
                        values["flood_fwd"] = flood_stats["acks"] / life
                        values["flood_refused"] = flood_stats["refusals"] / life
                        values["flood_closes"] = float(flood_stats["closes"])
                    cell = cells.setdefault((name, flooded), {})
                    for key, value in values.items():
                        cell.setdefault(key, Sample()).add(value)
                    if not flooded:
                        base = {"p50": p50, "p99": p99}
                    else:
                        r = ratios.setdefault((name, flooded), {})
                        r.setdefault("p50", Sample()).add(p50 / base["p50"])
                        r.setdefault("p99", Sample()).add(p99 / base["p99"])
                    print(
                        f"run {run + 1}/{args.runs} {name:<34} "
                        f"flooder={'yes' if flooded else 'no':<3} p50 {p50:7.2f} ms  "
                        f"p99 {p99:7.2f} ms  lost {res['lost']}  set-up {res['setup_s']:.1f} s"
                        + (
                            f"  flood sent {flood_stats['sent']:,} fwd {flood_stats['acks']:,} "
                            f"refused {flood_stats['refusals']:,} closes {flood_stats['closes']}"
                            if flood_stats
                            else ""
                        ),
                        file=sys.stderr,
                    )
    finally:
        stop_children()

    print("\nOther clients' relay latency with and without one flooding client")
    print(f"machine: {machine()}")
    print(
        f"{args.runs} interleaved runs x {args.duration:g} s; {args.pairs} pairs x "
        f"{args.rate:g} offers/s (974-byte Go Offer frames); total "
        f"{time.monotonic() - started:.0f} s\n"
    )
    rows = []
    for name in CONFIGS:
        for flooded in (False, True):
            c = cells[(name, flooded)]
            r = ratios.get((name, flooded), {})

            def med(key: str, fmt: str = "{:,.0f}", c: dict[str, Sample] = c) -> str:
                return fmt.format(c[key].median) if key in c else "-"

            rows.append(
                [
                    name,
                    "yes" if flooded else "no",
                    c["p50"].spread("{:.2f}"),
                    c["p99"].spread("{:.2f}"),
                    med("max", "{:.1f}"),
                    r["p50"].spread("{:.1f}x") if r else "-",
                    r["p99"].spread("{:.1f}x") if r else "-",
                    med("lost"),
                    med("setup", "{:.2f}"),
                    med("flood_sent"),
                    med("flood_fwd"),
                    med("flood_refused"),
                    med("flood_closes"),
                    med("server_cpu") + "%",
                    med("others_cpu") + "%",
                ]
            )
    print(
        table(
            [
                "server",
                "flooder",
                "others p50 ms",
                "others p99 ms",
                "max ms",
                "p50 vs none",
                "p99 vs none",
                "lost",
                "others set-up s",
                "flood sent/s (its life)",
                "forwarded/s",
                "refused/s",
                "closed",
                "server CPU",
                "rest CPU",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
