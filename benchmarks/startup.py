"""Start-up of the console scripts: Popen to exit, to listening, to the first message.

Usage: ``python benchmarks/startup.py [--runs 11] [--timeout 30] [--time-limit 300] [--json]
[--as-is] [--before BIN_DIR]``

Every row is a fresh process of the interpreter running this script (its
installed console scripts, not a shim), timed from Popen:

1. ``python -c pass`` to exit: the baseline of every ratio;
2. ``python -c "import click"`` to exit: the floor any click CLI pays (reference),
   and ``python -c "import aiortc, websockets.asyncio.client, pydantic, click"``:
   the floor of any offer peer built on these (reference);
3. ``rtc-peer --version``, ``rtc-peer --help``, ``rtc-signal --version``,
   ``rtc-signal --help`` to exit;
4. ``rtc-signal serve --port 0 --log-level warning`` to its stdout line
   ``listening on ws://...`` (then SIGTERM, and its exit is waited for, untimed);
5. ``rtc-peer offer --target bench --count 1 --interval 0`` to its first stdout
   line starting with ``recv `` (the first message from the answer peer) and
   to its exit. It calls one ``rtc-peer answer --id bench --interval 0``
   process, started once and serving successive callers, on one
   ``rtc-signal serve --port 0``.
6. With ``--before BIN_DIR``: rows 3 (``rtc-peer``), 4 and 5 again with the
   console scripts of another installation (say, a venv with the previous
   commit), interleaved with ours: a before/after ratio from one run.

Each figure is the median (min, max) of ``--runs`` runs, interleaved: run 1 of
every row, then run 2, ...; each run starts at the next row (rotating), so
that drift on a shared machine hits every row alike. One warm-up run is not
counted (it also fills the children's bytecode cache, benchmarks/.cache/pycache,
even where PYTHONDONTWRITEBYTECODE is set; ``--as-is`` measures the environment
unchanged). After each offer, the next process waits (at most 1 s) for the
answer peer to go quiet. The targets of issue 10 are checked against this run's
medians. Loopback only: every peer uses host candidates on 127.0.0.1 and no
STUN/TURN server. Bounded: every wait has ``--timeout``, the whole run
``--time-limit``, and every child is stopped at exit, whatever happens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from _common import (
    CACHE,
    HOST,
    REPO,
    Helper,
    Row,
    console_script,
    cpu_seconds,
    guard_children,
    machine,
    print_table,
    start_server,
    stop_children,
    table,
    time_process,
)

PACKAGES = ("click", "aiortc", "websockets", "pydantic")
#: where the children cache their bytecode (see :func:`bytecode_env`)
PYCACHE = CACHE / "pycache"
TARGET = "bench"
#: host candidates on 127.0.0.1 only (no ICE server is ever given); no timer delay
LOOPBACK = ("--host-address", HOST, "--interval", "0")
#: the reference quoted in issue 10 (not measured here)
GO_REFERENCE_MS = 30.0
GO_REFERENCE = (
    f"Go demo's offer binary: {GO_REFERENCE_MS:.0f} ms launch to first message "
    "(measured by the issue's reporter, not in this run)"
)
#: what any aiortc offer peer with a websockets client and pydantic models imports
OFFER_IMPORTS = "aiortc, websockets.asyncio.client, pydantic, click"
#: issue 10's targets
MAX_CLI_RATIO = 4.0
MAX_OFFER_FIRST_MS = 200.0
MAX_SERVE_MS = 120.0


@dataclasses.dataclass
class Probe:
    """One kind of process: the rows it fills and one timed run (ms per row)."""

    rows: tuple[Row, ...]
    run: Callable[[], tuple[float, ...]]


@dataclasses.dataclass
class Target:
    name: str
    limit: str
    value: float
    unit: str
    ok: bool

    @property
    def result(self) -> str:
        return "PASS" if self.ok else "MISS"


def bytecode_env(as_is: bool) -> str:
    """Let the children cache bytecode, as an installed program does: with
    PYTHONDONTWRITEBYTECODE set (as on some CI machines) every start would
    compile the modules that have no .pyc yet (rtc_signal's own, in an editable
    install). They write it under benchmarks/.cache/pycache (PYTHONPYCACHEPREFIX),
    not next to the sources; the warm-up run fills it. Returns a note for the
    header."""
    if as_is:
        return "environment as is (--as-is): PYTHONDONTWRITEBYTECODE={}".format(
            os.environ.get("PYTHONDONTWRITEBYTECODE", "unset")
        )
    dropped = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    PYCACHE.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return f"children cache bytecode in {PYCACHE.relative_to(REPO)}" + (
        f" (PYTHONDONTWRITEBYTECODE={dropped} removed for them; --as-is keeps it)"
        if dropped is not None
        else ""
    )


def wait_quiet(pid: int, timeout: float = 1.0, quiet: float = 0.05) -> None:
    """Wait until ``pid`` used no CPU for ``quiet`` s (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now


def probes(
    url: str, answer: Helper, timeout: float, before: Path | None
) -> tuple[list[Probe], dict[str, Row]]:
    python = [sys.executable]
    peer, signal_ = console_script("rtc-peer"), console_script("rtc-signal")

    def to_exit(argv: Sequence[str]) -> Callable[[], tuple[float, ...]]:
        return lambda: (time_process(argv, timeout, False).exited * 1e3,)

    def serve_with(signal_: list[str]) -> Callable[[], tuple[float, ...]]:
        def serve() -> tuple[float, ...]:
            argv = [*signal_, "serve", "--port", "0", "--log-level", "warning"]
            timed = time_process(
                argv, timeout, True, prefix="listening on ws://", stop_at_line=True
            )
            assert timed.first_line is not None
            return (timed.first_line * 1e3,)

        return serve

    def offer_with(peer: list[str]) -> Callable[[], tuple[float, ...]]:
        argv = [*peer, "offer", "--target", TARGET, "--signal", url, *LOOPBACK, "--count", "1"]

        def offer() -> tuple[float, ...]:
            timed = time_process(argv, timeout, True, prefix="recv ")
            answer.check_alive()
            wait_quiet(answer.proc.pid)
            assert timed.first_line is not None
            return timed.first_line * 1e3, timed.exited * 1e3

        return offer

    rows = {
        "baseline": Row("python -c pass (baseline)"),
        "click": Row('python -c "import click" (reference)'),
        "floor": Row(f'python -c "import {OFFER_IMPORTS}" (the offer\'s floor)'),
        "peer_version": Row("rtc-peer --version"),
        "peer_help": Row("rtc-peer --help"),
        "signal_version": Row("rtc-signal --version"),
        "signal_help": Row("rtc-signal --help"),
        "serve": Row("rtc-signal serve: Popen -> listening on"),
        "offer_first": Row("rtc-peer offer: Popen -> 1st `recv ` line"),
        "offer_exit": Row("rtc-peer offer: Popen -> exit"),
    }
    r = rows
    kinds = [
        Probe((r["baseline"],), to_exit([*python, "-c", "pass"])),
        Probe((r["click"],), to_exit([*python, "-c", "import click"])),
        Probe((r["floor"],), to_exit([*python, "-c", f"import {OFFER_IMPORTS}"])),
        Probe((r["peer_version"],), to_exit([*peer, "--version"])),
        Probe((r["peer_help"],), to_exit([*peer, "--help"])),
        Probe((r["signal_version"],), to_exit([*signal_, "--version"])),
        Probe((r["signal_help"],), to_exit([*signal_, "--help"])),
        Probe((r["serve"],), serve_with(signal_)),
        Probe((r["offer_first"], r["offer_exit"]), offer_with(peer)),
    ]
    if before is not None:  # the same commands of another installation, interleaved
        old_peer, old_signal = [str(before / "rtc-peer")], [str(before / "rtc-signal")]
        for key, label in [
            ("before_peer_version", "before: rtc-peer --version"),
            ("before_peer_help", "before: rtc-peer --help"),
            ("before_serve", "before: rtc-signal serve: Popen -> listening on"),
            ("before_offer_first", "before: rtc-peer offer: Popen -> 1st `recv ` line"),
            ("before_offer_exit", "before: rtc-peer offer: Popen -> exit"),
        ]:
            rows[key] = Row(label)
        kinds += [
            Probe((r["before_peer_version"],), to_exit([*old_peer, "--version"])),
            Probe((r["before_peer_help"],), to_exit([*old_peer, "--help"])),
            Probe((r["before_serve"],), serve_with(old_signal)),
            Probe((r["before_offer_first"], r["before_offer_exit"]), offer_with(old_peer)),
        ]
    return kinds, rows


def targets(rows: dict[str, Row]) -> list[Target]:
    base = rows["baseline"].median
    found = [
        Target(
            f"{rows[key].label} vs python -c pass",
            f"<= {MAX_CLI_RATIO:g}x",
            rows[key].median / base,
            "x",
            rows[key].median / base <= MAX_CLI_RATIO,
        )
        for key in ("peer_version", "peer_help", "signal_version", "signal_help")
    ]
    first, serve = rows["offer_first"].median, rows["serve"].median
    found.append(
        Target(
            "rtc-peer offer launch -> first message",
            f"<= {MAX_OFFER_FIRST_MS:g} ms",
            first,
            "ms",
            first <= MAX_OFFER_FIRST_MS,
        )
    )
    found.append(
        Target(
            "rtc-signal serve start -> listening",
            f"<= {MAX_SERVE_MS:g} ms",
            serve,
            "ms",
            serve <= MAX_SERVE_MS,
        )
    )
    return found


def report_text(
    args: argparse.Namespace, rows: dict[str, Row], found: list[Target], header: list[str]
) -> None:
    print("\n".join(header))
    print_table(
        f"Start-up, Popen to exit unless stated (median of {args.runs} interleaved runs)",
        "ms",
        list(rows.values()),
        [("python -c pass", rows["baseline"])],
    )
    cells = [
        [t.name, t.limit, f"{t.value:.2f}x" if t.unit == "x" else f"{t.value:.1f} ms", t.result]
        for t in found
    ]
    print("\n## Targets (issue 10), from this run's medians\n")
    print(table(["target", "limit", "median", "result"], cells))
    first = rows["offer_first"].median
    print(
        f"\nReference (issue 10): {GO_REFERENCE}; rtc-peer offer here: {first:.0f} ms "
        f"({first / GO_REFERENCE_MS:.1f}x, another machine)."
    )
    print(
        f"Targets: --help/--version at most {MAX_CLI_RATIO:g}x `python -c pass`; offer "
        f"launch to first message median at most {MAX_OFFER_FIRST_MS:g} ms; serve start to "
        f"listening at most {MAX_SERVE_MS:g} ms. "
        f"{sum(t.ok for t in found)}/{len(found)} PASS."
    )


def report_json(
    args: argparse.Namespace, rows: dict[str, Row], found: list[Target], header: list[str]
) -> None:
    base = rows["baseline"].median
    print(
        json.dumps(
            {
                "machine": machine(*PACKAGES),
                "header": header,
                "runs": args.runs,
                "rows": {
                    key: {
                        "label": row.label,
                        "median_ms": row.median,
                        "min_ms": min(row.values),
                        "max_ms": max(row.values),
                        "values_ms": row.values,
                        "ratio_vs_baseline": row.median / base,
                    }
                    for key, row in rows.items()
                },
                "targets": [{**dataclasses.asdict(t), "result": t.result} for t in found],
                "reference": GO_REFERENCE,
            },
            indent=1,
        )
    )


def bench(args: argparse.Namespace) -> None:
    started = time.monotonic()
    bytecode = bytecode_env(args.as_is)
    loadavg = os.getloadavg()
    server, url = start_server()
    answer = Helper.start(
        "rtc-peer-answer",
        [*console_script("rtc-peer"), "answer", "--id", TARGET, "--signal", url, *LOOPBACK],
    )
    answer.wait_line("rtc-peer: registered as", args.timeout)
    kinds, rows = probes(url, answer, args.timeout, args.before)
    for run in range(args.runs + 1):  # run 0: warm-up (file cache, .pyc files)
        order = kinds[run % len(kinds) :] + kinds[: run % len(kinds)]
        for probe in order:
            values = probe.run()
            if run:
                for row, value in zip(probe.rows, values, strict=True):
                    row.values.append(value)
    server.check_alive()
    answer.check_alive()
    header = [
        f"# rtc-signal start-up ({args.runs} runs, one warm-up, loopback only)",
        "",
        f"Machine: {machine(*PACKAGES)}",
        "Load average (1/5/15 min) at start {:.2f} {:.2f} {:.2f}, ".format(*loadavg)
        + "at end {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        f"Commands: {' '.join(console_script('rtc-peer'))}, "
        f"{' '.join(console_script('rtc-signal'))}; signaling for the offer: {url}",
        f"Bytecode: {bytecode}",
        f"Total time: {time.monotonic() - started:.0f} s",
    ]
    found = targets(rows)
    (report_json if args.json else report_text)(args, rows, found, header)
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11, help="runs per row (median)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds for any one wait")
    parser.add_argument(
        "--time-limit", type=float, default=300, help="seconds for the whole run, then stop"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--as-is",
        action="store_true",
        help="leave PYTHONDONTWRITEBYTECODE and the bytecode cache as the environment has them",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="BIN_DIR",
        help="also time the rtc-peer/rtc-signal of another installation (a venv's bin/, "
        "e.g. of the previous release), interleaved with ours",
    )
    args = parser.parse_args()
    if args.runs < 1 or args.timeout <= 0:
        parser.error("--runs must be at least 1 and --timeout positive")
    guard_children(args.time_limit)  # SIGALRM/SIGTERM/SIGHUP: children stopped, exit
    try:
        bench(args)
    except KeyboardInterrupt:
        return 130
    finally:
        signal.alarm(0)
        stop_children()
    return 0


if __name__ == "__main__":
    sys.exit(main())
