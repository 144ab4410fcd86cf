"""Call set-up of ``rtc-peer bench`` with and without the set-up tweaks, in one run.

Usage: ``python benchmarks/setup.py [--runs 10] [--time-limit 600] [--json]
[--variants tuned ...]``

Starts one ``rtc-signal serve --port 0`` and, per variant, one ``rtc-peer answer
--host-address 127.0.0.1 --interval 0`` run with that variant's environment;
then ``--runs`` times, interleaved (run 1 of every variant, then run 2, ...,
starting at the next variant each time so that drift on the shared machine
hits all alike), a fresh ``rtc-peer bench --json --seconds 0.05`` process with
the same environment against its own answer peer. The figure is the bench's
``setup_ms`` (offer sent -> data channel open, peers/bench.py), so both
processes of a call run the same variant. Variants (peers/tuning.py):

- ``tuned``: every tweak, as rtc-peer runs by default;
- ``without <tweak>`` for each set-up tweak (``ice_pacing``, ``dtls_warmup``,
  ``dtls_context``, ``dcep_open``, ``fingerprint_cache``,
  ``spare_certificate``, ``lazy_srtp``): every tweak but that one (what each
  is worth on its own);
- ``ice_pacing + dtls_warmup only``: the first two set-up tweaks without the
  later five;
- ``no set-up tweaks``: every tweak but the seven set-up ones: aioice's ICE
  pacing, a cold DTLS context in each process and so on, the same-run
  baseline;
- ``no tuning``: ``RTC_PEER_NO_TUNING=1``, aiortc/aioice as installed (reference).

Prints the median (min-max) of each and the ratio of medians to the baseline.

With ``spare_certificate`` and ``lazy_srtp`` (shared 2-core VM, other
sessions at work; ms)::

    15 runs each, load ~1.6          median   min-max   vs baseline
    tuned                              10.6    9-18     0.27
    without spare_certificate          12.7   10-22     0.32
    without lazy_srtp                  15.8    9-22     0.40
    no set-up tweaks                   39.9   36-50     1.00

    20 runs each, load 4 -> 1.8      median   min-max
    tuned                              12.5   11-18
    without spare_certificate          13.5   11-17
    without lazy_srtp                  13.4   10-18
    no set-up tweaks                   41.1   37-61

(each is worth ~1 ms in the traces: the spare saves the answer peer's
certificate, ~0.6-0.9 ms before its answer, and its DTLS context, which
otherwise ran right when the offerer's first ICE check arrived; lazy_srtp
~0.25 ms on each peer between the DTLS handshake and SCTP's INIT; the 15.8
above is the load's doing). The figures before them, on the shared 2-core
VM with one other session running browser tests (load average ~2), ms
(setup_ms from perf_counter since dtls_context; before, uvloop's 1 ms clock
steps)::

    30 runs each                     median   min   vs baseline
    tuned                              20.4    13   0.41
    without dcep_open                  21.8    15   0.44
    ice_pacing + dtls_warmup only      23.2    17   0.47
    no set-up tweaks                   49.2    41   1.00

    20 runs each, a quieter moment   median   min
    tuned                              15.7    11
    without dtls_context               16.1    14
    without dcep_open                  18.9    14
    ice_pacing + dtls_warmup only      17.4    15
    no set-up tweaks                   42.8    39

With 10 runs the tweaks worth under 1.5 ms each (dtls_context ~0.9 ms,
fingerprint_cache ~0.5 ms, per the traces) drown in the load's +-3 ms; the
earlier figures (10 runs, load 9-20): tuned 56.0, without ice_pacing 70.0,
without dtls_warmup 86.5, baseline 76.5, no tuning 108.5.

Where a tuned call's ~13 ms go (offerer and answer peer instrumented with
perf_counter timestamps, a calm run, all seven set-up tweaks): offer through
the server to the answer peer ~0.9; answer peer ~3.6 (acknowledging the offer
to the server 0.6, of which 0.4 in the socket write; RTCPeerConnection 0.1
with the spare certificate; setRemoteDescription 0.8, createAnswer 0.15,
setLocalDescription 0.8 of which gathering 0.5; the answer's body 0.3); answer
through the server ~0.75; offerer: acknowledging it 0.4, setRemoteDescription
0.6, its check 0.4 later; ICE check round trip ~0.9 (the answer peer's own
check reached the offerer before the answer did); DTLS handshake ~3.5 (2
round trips; OpenSSL's own work ~0.3 + 0.6 + 0.45 ms for the three flights
that need ECDHE/ECDSA, measured apart, the rest Python and wake-ups);
fingerprint check 0.25 per side; SCTP handshake ~1.5 (both sides send INIT,
RFC 8841); DCEP OPEN handed to SCTP ~0.1. An earlier calm trace before
spare_certificate and lazy_srtp: ~16 ms, the answer peer's share ~5.
Loopback only; no ICE server. rtc-peer runs on uvloop when installed, whose
clock has millisecond steps: setup_ms comes in whole milliseconds then.
Bounded: every child has a timeout, the whole run ``--time-limit`` (SIGALRM),
and every child is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import (
    HOST,
    Helper,
    console_script,
    guard_children,
    machine,
    start_rtc_signal,
    table,
)
from bench_cli import aiortc_tuning, event_loop

SETUP_TWEAKS = (
    "ice_pacing",
    "dtls_warmup",
    "dtls_context",
    "dcep_open",
    "fingerprint_cache",
    "spare_certificate",
    "lazy_srtp",
)
BASELINE = "no set-up tweaks"


def variants() -> dict[str, dict[str, str]]:
    """Environment changes of each variant (applied over ours, with both
    tuning variables cleared first)."""
    from rtc_signal.peers.tuning import NAMES

    def without(*left_out: str) -> dict[str, str]:
        return {"RTC_PEER_TUNING": ",".join(n for n in NAMES if n not in left_out)}

    return {
        "tuned": {},
        **{f"without {name}": without(name) for name in SETUP_TWEAKS},
        "ice_pacing + dtls_warmup only": without(*SETUP_TWEAKS[2:]),
        BASELINE: without(*SETUP_TWEAKS),
        "no tuning": {"RTC_PEER_NO_TUNING": "1"},
    }


def environment(changes: dict[str, str]) -> dict[str, str]:
    cleared = ("RTC_PEER_TUNING", "RTC_PEER_NO_TUNING")
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env.update(changes)
    return env


def bench_once(url: str, target: str, env: dict[str, str], timeout: float) -> float:
    """One fresh ``rtc-peer bench`` process: its setup_ms."""
    argv = [
        *console_script("rtc-peer"),
        "bench",
        "--target",
        target,
        "--signal",
        url,
        "--host-address",
        HOST,
        "--json",
        "--seconds",
        "0.05",
        "--size",
        "1024",
    ]
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, env=env)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"rtc-peer bench failed ({proc.returncode}):\n{err}")
    return float(json.loads(proc.stdout)["setup_ms"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="calls per variant (median)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per bench process")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds for the whole run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--variants", nargs="+", help=f"a subset of the variants (and {BASELINE!r}, always)"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    guard_children(args.time_limit)

    server = start_rtc_signal()
    try:
        chosen = variants()
        if args.variants:
            unknown = set(args.variants) - set(chosen)
            if unknown:
                parser.error(f"unknown variants {sorted(unknown)}; known: {list(chosen)}")
            chosen = {k: v for k, v in chosen.items() if k in args.variants or k == BASELINE}
        names = list(chosen)
        answers: dict[str, Helper] = {}
        for index, name in enumerate(names):
            env = environment(chosen[name])
            target = f"setup-{index}"
            argv = [
                *console_script("rtc-peer"),
                "answer",
                "--id",
                target,
                "--host-address",
                HOST,
                "--interval",
                "0",
                "--signal",
                server.url,
            ]
            answers[name] = Helper.start(name, argv, env)
        for answer in answers.values():
            answer.wait_line("rtc-peer: registered as", timeout=args.timeout)

        print(f"# rtc-peer bench set-up (offer sent -> channel open), {args.runs} runs each")
        print(f"Event loop: {event_loop()}")
        print(f"Tuning by default: {aiortc_tuning()}")
        print(f"Machine: {machine('aiortc', 'aioice')}")
        print("Load average at start (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        sys.stdout.flush()

        targets = {name: f"setup-{i}" for i, name in enumerate(names)}
        for name in names:  # warm-up call, not counted (first call of each answer peer)
            bench_once(server.url, targets[name], environment(chosen[name]), args.timeout)
        samples: dict[str, list[float]] = {name: [] for name in names}
        started = time.monotonic()
        for run in range(args.runs):
            for name in names[run % len(names) :] + names[: run % len(names)]:
                env = environment(chosen[name])
                samples[name].append(bench_once(server.url, targets[name], env, args.timeout))
            for answer in answers.values():
                answer.check_alive()

        base = statistics.median(samples[BASELINE])
        rows = []
        for name in names:
            values = samples[name]
            median = statistics.median(values)
            rows.append(
                [
                    name,
                    f"{median:.1f}",
                    f"{min(values):.0f}-{max(values):.0f}",
                    f"{median / base:.2f}",
                    " ".join(f"{v:.0f}" for v in values),
                ]
            )
        print()
        print(table(["variant", "median ms", "min-max", "vs baseline", "runs (ms)"], rows))
        print(
            f"\nMeasured in {time.monotonic() - started:.0f} s; load average at the end: "
            "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        )
        if args.json:
            print(json.dumps({name: samples[name] for name in names}))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
