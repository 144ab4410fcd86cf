"""Relayed messages per second: rtc-signal vs the PeerJS server vs a naive relay.

Usage: ``python benchmarks/relay.py [--runs 5] [--duration 2] [--pairs 1 100] [--generators 1]``

Every server runs in its own process on loopback; the load generator runs in
another process (one per measurement, see ``--worker``), or ``--generators``
processes that share the pairs and start sending together (for machines with
cores to spare: one generator near 100 % CPU would bound the server's figure). A *pair* is one
answer peer (registered) and one offer peer that sends the Go demo's real
Offer frame to it, as fast as a window of ``--window`` outstanding frames
allows. Only frames delivered to answer peers are counted, over ``--duration``
seconds after ``--warmup`` seconds. Runs are interleaved (run 1 of every
server, then run 2, ...) so that drift on the machine hits every server alike;
the ratio column is the median of the per-run ratios against PeerJS (or
``--baseline NAME``).

Flow control:
- rtc-signal and the naive relay acknowledge every Offer with a 103 frame:
  an offer peer sends a new frame for each 103 it reads (the protocol's way).
- PeerJS has no acknowledgement: the load generator tells the offer peer
  about every delivery its answer peer reads (in-process, no network), so
  the same window bounds the frames in flight. The PeerJS server thus writes
  one frame per message where ours write two (forward + ack).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    HOST,
    LeanWs,
    Sample,
    ServerProc,
    add_server_arguments,
    chosen_starters,
    client_frame,
    connect,
    cpu_seconds,
    golden_offer_body,
    golden_sdp,
    machine,
    machine_busy,
    raise_fd_limit,
    readline_by,
    rtc_request,
    rtc_response,
    run_worker,
    set_deadline,
    table,
    worker_result,
)

# -- the load generator (runs in its own process) --------------------------------


class Receiver(LeanWs):
    """An answer peer: counts the frames delivered to it."""

    def __init__(self, host: str, port: int, resource: str) -> None:
        super().__init__(host, port, resource)
        self.count = 0
        self.batch = 0
        self.sample: bytes | None = None
        self.partner: Sender | None = None  # credited per delivery (PeerJS)

    def on_frame(self, buf: bytearray, start: int, end: int) -> None:
        if self.sample is None:
            self.sample = bytes(buf[start:end])
        self.count += 1
        self.batch += 1

    def after_batch(self) -> None:
        if self.batch:
            if self.partner is not None:
                self.partner.release(self.batch)
            self.batch = 0


class Sender(LeanWs):
    """An offer peer: keeps ``window`` frames in flight."""

    def __init__(self, host: str, port: int, resource: str) -> None:
        super().__init__(host, port, resource)
        self.frame = b""
        self.window = 0
        self.inflight = 0
        self.sent = 0
        self.ack: bytes | None = None  # credit per ack (rtc-signal, naive)
        self.acked = 0
        self.batch = 0
        self.errors = 0
        self.error_sample: bytes | None = None

    def on_frame(self, buf: bytearray, start: int, end: int) -> None:
        ack = self.ack
        if ack is not None and end - start == len(ack) and buf.startswith(ack, start):
            self.batch += 1
        else:
            self.errors += 1
            if self.error_sample is None:
                self.error_sample = bytes(buf[start:end])

    def after_batch(self) -> None:
        if self.batch:
            self.acked += self.batch
            self.release(self.batch)
            self.batch = 0

    def release(self, n: int) -> None:
        self.inflight -= n
        self.pump()

    def pump(self) -> None:
        room = self.window - self.inflight
        if room > 0:
            self.write(self.frame * room)
            self.inflight += room
            self.sent += room


async def make_pair(kind: str, port: int, tag: str, i: int, window: int) -> tuple[Receiver, Sender]:
    answer_id, offer_id = f"answer-{tag}-{i}", f"offer-{tag}-{i}"

    def factory(cls: type[LeanWs], resource: str) -> Any:
        return lambda: cls(HOST, port, resource)

    if kind == "peerjs":
        rx = await connect(
            factory(Receiver, f"/peerjs?key=peerjs&id={answer_id}&token=a{i}"), HOST, port
        )
        tx = await connect(
            factory(Sender, f"/peerjs?key=peerjs&id={offer_id}&token=o{i}"), HOST, port
        )
        for peer in (rx, tx):
            hello = json.loads(await peer.next_frame())
            assert hello == {"type": "OPEN"}, hello
        payload = {
            # what the PeerJS browser client sends for a data connection
            "sdp": {"type": "offer", "sdp": golden_sdp()},
            "type": "data",
            "connectionId": f"dc_{tag}{i}",
            "label": "data",
            "reliable": True,
            "serialization": "binary",
            "browser": "python",
        }
        message = {"type": "OFFER", "src": offer_id, "dst": answer_id, "payload": payload}
        tx.frame = client_frame(json.dumps(message, separators=(",", ":")).encode(), opcode=1)
        rx.partner = tx
    else:
        rx = await connect(factory(Receiver, "/register"), HOST, port)
        tx = await connect(factory(Sender, "/offer"), HOST, port)
        reply = await rx.request(client_frame(rtc_request(1, answer_id, "", None)))
        assert reply == rtc_response(101, 0, "ok"), reply
        tx.frame = client_frame(rtc_request(3, offer_id, answer_id, golden_offer_body()))
        tx.ack = rtc_response(103, 0, "ok")
    rx.stop_capturing()
    tx.stop_capturing()
    tx.window = window
    return rx, tx


def check_delivery(kind: str, rx: Receiver, tx: Sender) -> None:
    """The answer peer got the Offer (verbatim, except from the naive relay)."""
    assert rx.sample is not None, "nothing delivered"
    if kind == "naive":  # re-encoded: same content
        assert json.loads(rx.sample)["command"] == 3
        payload = json.loads(base64.b64decode(json.loads(rx.sample)["payload"]))
        assert base64.b64decode(payload["body"]) == golden_offer_body(), payload
    elif kind != "peerjs":
        assert client_frame(rx.sample) == tx.frame, "the forward is not the original frame"
    else:
        msg = json.loads(rx.sample)
        assert msg["type"] == "OFFER" and msg["payload"]["sdp"]["sdp"] == golden_sdp(), msg


async def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    kind, port, pairs = cfg["kind"], cfg["port"], cfg["pairs"]
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> tuple[Receiver, Sender]:
        async with sem:
            return await make_pair(kind, port, cfg["tag"], i, cfg["window"])

    # with --generators N, this process is generator ``index`` and makes every Nth pair
    share = range(cfg.get("index", 0), pairs, cfg.get("generators", 1))
    made = await asyncio.wait_for(asyncio.gather(*(one(i) for i in share)), 60)
    receivers = [rx for rx, _ in made]
    senders = [tx for _, tx in made]
    server_pid = cfg["server_pid"]
    if cfg.get("generators", 1) > 1:
        # the barrier: every generator has its pairs; all start sending at once
        print("ready", flush=True)
        line = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), 60
        )
        assert line.strip() == "go", line
    for tx in senders:
        tx.pump()
    # Measured once every pair is flowing: a call's set-up (with --redis its
    # ID claims, with --workers a connection moving to its target's worker)
    # waits for Redis round trips, which on a saturated node take a few of its
    # loop iterations (each one then relays thousands of frames).
    flowing_by = time.monotonic() + 30
    while any(rx.count == 0 for rx in receivers) and time.monotonic() < flowing_by:  # noqa: ASYNC110 (polling counters)
        await asyncio.sleep(0.05)
    await asyncio.sleep(cfg["warmup"])
    c0, t0 = sum(rx.count for rx in receivers), time.perf_counter()
    s0, p0, m0 = cpu_seconds(server_pid), time.process_time(), machine_busy()
    await asyncio.sleep(cfg["duration"])
    c1, t1 = sum(rx.count for rx in receivers), time.perf_counter()
    s1, p1, m1 = cpu_seconds(server_pid), time.process_time(), machine_busy()
    for tx in senders:
        tx.window = 0
    errors = sum(tx.errors for tx in senders)
    if errors:
        sample = next(tx.error_sample for tx in senders if tx.error_sample)
        raise RuntimeError(f"{errors} unexpected replies, e.g. {sample!r}")
    silent = [(i, tx.sent, tx.acked) for i, (rx, tx) in enumerate(made) if rx.sample is None]
    if silent:
        raise RuntimeError(f"{len(silent)} answer peers got nothing; (pair, sent, acked): {silent}")
    for rx, tx in made:
        check_delivery(kind, rx, tx)
    for peer in (*senders, *receivers):
        peer.close()
    await asyncio.sleep(0.05)
    dt = t1 - t0
    return {
        "rate": (c1 - c0) / dt,
        "server_cpu": (s1 - s0) / dt,
        "client_cpu": (p1 - p0) / dt,
        "other_cpu": max(0.0, (m1 - m0) - (s1 - s0) - (p1 - p0)) / dt,
        "machine_cpu": (m1 - m0) / dt,
        "frame_bytes": len(senders[0].frame),
    }


def run_generators(cfg: dict[str, Any], generators: int, timeout: float) -> dict[str, Any]:
    """``generators`` load-generator processes, each with every Nth pair, sending
    from the same moment (a ready/go barrier): their rates summed, their CPU too."""
    deadline = time.monotonic() + timeout
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                json.dumps({**cfg, "index": k, "generators": generators}),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=raise_fd_limit,
        )
        for k in range(generators)
    ]
    try:
        for proc in procs:  # each says "ready" once its pairs are connected
            assert proc.stdout is not None
            ready = readline_by(proc.stdout, deadline)
            if ready.strip() != b"ready":
                raise RuntimeError(f"load generator not ready: {ready!r} {_stderr(proc)}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(worker_result(proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    server_cpu = statistics.fmean(r["server_cpu"] for r in results)  # (the same window)
    client_cpu = sum(r["client_cpu"] for r in results)
    machine_cpu = statistics.fmean(r["machine_cpu"] for r in results)
    return {
        "rate": sum(r["rate"] for r in results),
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "other_cpu": max(0.0, machine_cpu - server_cpu - client_cpu),
        "frame_bytes": results[0]["frame_bytes"],
    }


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    proc.kill()
    _, err = proc.communicate(timeout=10)
    return err.decode(errors="replace")[-3000:]


def worker_config(
    kind: str,
    server: ServerProc,
    pairs: int,
    *,
    window: int,
    warmup: float,
    duration: float,
    tag: str,
    loop: str = "uvloop",
) -> dict[str, Any]:
    """What ``relay.py --worker`` (one load generator) reads: ``kind`` of
    server (its protocol), ``pairs`` pairs with ``window`` frames in flight
    each, IDs made unique by ``tag``, measured for ``duration`` s after
    ``warmup`` once every pair flows, on event loop ``loop``."""
    return {
        "kind": kind,
        "port": server.port,
        "server_pid": server.pid,
        "pairs": pairs,
        "window": window,
        "warmup": warmup,
        "duration": duration,
        "tag": tag,
        "loop": loop,
    }


# -- the orchestrator ---------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per run")
    parser.add_argument("--window", type=int, default=32, help="frames in flight per pair")
    parser.add_argument(
        "--baseline",
        default="peerjs",
        help="the server the ratio column divides by, run by run (default: peerjs)",
    )
    parser.add_argument(
        "--generators",
        type=int,
        default=1,
        help="load-generator processes sharing the pairs (for machines with cores to spare: "
        "one generator must stay below 100%% CPU for the server to be the limit)",
    )
    parser.add_argument(
        "--loadgen-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the load generator's event loop: uvloop costs it less CPU per message, "
        "which leaves more of the machine to the servers (the same for every server)",
    )
    add_server_arguments(parser)
    args = parser.parse_args()

    if args.worker:
        raise_fd_limit()
        set_deadline(120)
        cfg = json.loads(args.worker)
        if cfg.get("loop", "uvloop") == "uvloop":
            import uvloop  # (a dependency of rtc-signal: installed wherever it is)

            result = uvloop.run(worker(cfg))
        else:
            result = asyncio.run(worker(cfg))
        print(json.dumps(result))
        return

    if not 1 <= args.generators <= min(args.pairs):
        parser.error("--generators must be between 1 and the smallest --pairs")
    starters = chosen_starters(args)
    names = list(starters)
    per_run = args.warmup + args.duration + 1.5
    set_deadline(30 + args.runs * len(args.pairs) * len(names) * per_run + 300)  # + npm install
    raise_fd_limit()
    servers: dict[str, ServerProc] = {}
    rates: dict[tuple[str, int], Sample] = {}
    ratios: dict[tuple[str, int], Sample] = {}
    usage: dict[tuple[str, int], dict[str, Sample]] = {}
    frame_bytes: dict[str, int] = {}
    started = time.monotonic()
    try:
        for name, start in starters.items():
            servers[name] = start()
        for run in range(args.runs):
            for pairs in args.pairs:
                this_run: dict[str, float] = {}
                shift = run % len(names)  # rotate: no server always goes first
                for name in names[shift:] + names[:shift]:
                    server = servers[name]
                    cfg = worker_config(
                        name,
                        server,
                        pairs,
                        window=args.window,
                        warmup=args.warmup,
                        duration=args.duration,
                        tag=f"r{run}p{pairs}",
                        loop=args.loadgen_loop,
                    )
                    try:
                        if args.generators > 1:
                            res = run_generators(cfg, args.generators, timeout=per_run + 60)
                        else:
                            res = run_worker(__file__, cfg, timeout=per_run + 60)
                    except Exception:
                        print(server.stderr_tail(), file=sys.stderr)
                        raise
                    key = (name, pairs)
                    rates.setdefault(key, Sample()).add(res["rate"])
                    use = usage.setdefault(key, {k: Sample() for k in ("srv", "cli", "oth", "us")})
                    use["srv"].add(100 * res["server_cpu"])
                    use["cli"].add(100 * res["client_cpu"])
                    use["oth"].add(100 * res["other_cpu"])
                    use["us"].add(1e6 * res["server_cpu"] / res["rate"])
                    frame_bytes[name] = res["frame_bytes"]
                    this_run[name] = res["rate"]
                    print(
                        f"run {run + 1}/{args.runs} {name:>10} pairs={pairs:<4} "
                        f"{res['rate']:>9,.0f} msg/s  CPU: server {100 * res['server_cpu']:3.0f}%"
                        f" load generator {100 * res['client_cpu']:3.0f}%"
                        f" other processes {100 * res['other_cpu']:3.0f}%",
                        file=sys.stderr,
                    )
                if args.baseline in this_run:
                    for name, rate in this_run.items():
                        ratio = rate / this_run[args.baseline]
                        ratios.setdefault((name, pairs), Sample()).add(ratio)
    finally:
        for server in servers.values():
            server.stop()

    elapsed = time.monotonic() - started
    print("\nRelay throughput: Offer frames delivered to answer peers per second")
    print(f"machine: {machine()}")
    if "peerjs" in servers:
        print(
            f"PeerJS server: npm 'peer' {servers['peerjs'].info.get('version', '?')}, "
            f"node {os.popen('node --version').read().strip()}"
        )
    print(
        f"{args.runs} interleaved runs x {args.duration:g} s (after {args.warmup:g} s warm-up), "
        f"window {args.window} frames in flight per pair, {args.generators} load-generator "
        f"process{'es' if args.generators > 1 else ''} on {args.loadgen_loop}; "
        f"total {elapsed:.0f} s\n"
    )
    rows = []
    for pairs in args.pairs:
        for name in names:
            key = (name, pairs)
            ratio_sample = ratios.get(key)
            use = usage[key]
            rows.append(
                [
                    name,
                    str(pairs),
                    f"{frame_bytes[name]:,} B",
                    rates[key].spread(),
                    ratio_sample.spread("{:.2f}x") if ratio_sample else "-",
                    f"{use['us'].median:.1f}",
                    f"{use['srv'].median:.0f}%",
                    f"{use['cli'].median:.0f}%",
                    f"{use['oth'].median:.0f}%",
                ]
            )
    print(
        table(
            [
                "server",
                "pairs",
                "frame",
                "msgs/s median (min-max)",
                f"vs {args.baseline} (min-max)",
                "server CPU us/msg",
                "server CPU",
                "loadgen CPU",
                "others CPU",
            ],
            rows,
        )
    )
    print(
        "\nCPU columns are medians over the measured windows; 'others' is what the rest of"
        " the machine used meanwhile (of 2 cores = 200%)."
    )


if __name__ == "__main__":
    main()
