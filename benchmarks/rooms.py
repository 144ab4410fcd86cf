"""Rooms: how long the k-th member takes to join a mesh, and what members cost.

Usage: ``python benchmarks/rooms.py [--runs 3] [--members 8] [--idle 2]
[--timeout 60] [--time-limit 900]``

Each run starts one ``rtc-signal serve`` and then ``rtc-peer join --room bench
--id mK --interval 3600`` processes one after the other (K = 1..``--members``;
the timer never fires, so no messages flow): member K is started once member
K-1 is connected to everyone. For every K >= 2 it measures:

- **connect s**: Popen of member K to the last of its K-1 ``connected to``
  lines on stderr (process start-up, Join, K-1 offers and ICE/DTLS/SCTP set-ups
  in parallel; the baseline is K = 2, a single link);
- **setup CPU**: member K's CPU time (user + system, /proc) over that same
  wall time, as a fraction of one core;
- **idle CPU/member**: once K members are connected, each member's CPU over
  ``--idle`` seconds of quiet mesh (ICE consent checks, keepalives), averaged
  over the K members, as a percentage of one core.

Each figure is the median (min-max) of ``--runs`` runs. Loopback only (host
candidates on 127.0.0.1, no STUN/TURN). Bounded: every wait has ``--timeout``,
the whole run ``--time-limit``, and every child is stopped at exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from _common import (
    Sample,
    console_script,
    cpu_seconds,
    guard_children,
    machine,
    spawn,
    start_rtc_signal,
    table,
)


class Member:
    def __init__(self, name: str, url: str, log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.err"
        argv = [
            *console_script("rtc-peer"),
            "join",
            "--room",
            "bench",
            "--id",
            name,
            "--signal",
            url,
            "--host-address",
            "127.0.0.1",
            "--interval",
            "3600",
        ]
        with self.log.open("wb") as err:
            self.started = time.monotonic()
            self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=err)

    def connected_to(self) -> set[str]:
        text = self.log.read_text(errors="replace")
        prefix = "rtc-peer: connected to "
        return {line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)}

    def wait_connected(self, others: set[str], timeout: float) -> float:
        """Seconds from start to being connected to all ``others`` (waiting at
        most ``timeout`` from now)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if others <= self.connected_to():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(
            f"{self.name} not connected to {sorted(others - self.connected_to())} "
            f"(exit status {self.proc.poll()}):\n{self.log.read_text(errors='replace')[-3000:]}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def one_run(
    count: int,
    idle: float,
    timeout: float,
    log_dir: Path,
    connect: dict[int, Sample],
    setup_cpu: dict[int, Sample],
    idle_cpu: dict[int, Sample],
) -> None:
    server = start_rtc_signal()
    members: list[Member] = []
    try:
        for k in range(1, count + 1):
            member = Member(f"m{k}", server.url, log_dir)
            others = {m.name for m in members}
            members.append(member)
            if others:
                seconds = member.wait_connected(others, timeout)
                cpu = cpu_seconds(member.proc.pid)  # a new process: all of it is set-up
                connect[k].add(seconds)
                setup_cpu[k].add(cpu / seconds)
                for m in members[:-1]:  # the earlier members see it connect too
                    m.wait_connected(others - {m.name} | {member.name}, timeout)
            else:
                deadline = time.monotonic() + timeout
                while "rtc-peer: joined bench" not in member.log.read_text(errors="replace"):
                    if time.monotonic() > deadline or member.proc.poll() is not None:
                        raise RuntimeError(f"m1 did not join:\n{member.log.read_text()[-2000:]}")
                    time.sleep(0.01)
            if k >= 2 and idle > 0:
                before = {m.name: cpu_seconds(m.proc.pid) for m in members}
                time.sleep(idle)
                used = [cpu_seconds(m.proc.pid) - before[m.name] for m in members]
                idle_cpu[k].add(100 * sum(used) / len(used) / idle)
    finally:
        for m in members:
            m.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--idle", type=float, default=2.0, help="idle window (s); 0: skip")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--time-limit", type=float, default=900.0)
    args = parser.parse_args()
    if args.members < 2 or args.runs < 1:
        parser.error("--members must be >= 2 and --runs >= 1")
    guard_children(args.time_limit)

    ks = range(2, args.members + 1)
    connect = {k: Sample() for k in ks}
    setup_cpu = {k: Sample() for k in ks}
    idle_cpu = {k: Sample() for k in ks}
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-rooms-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for run in range(args.runs):
            one_run(args.members, args.idle, args.timeout, log_dir, connect, setup_cpu, idle_cpu)
            print(f"run {run + 1}/{args.runs} done", flush=True)
    finally:
        for path in log_dir.glob("*.err"):
            path.unlink()
        log_dir.rmdir()

    base = connect[2].median
    rows = [
        [
            str(k),
            str(k - 1),
            connect[k].spread("{:.2f}"),
            f"{connect[k].median / base:.2f}x",
            setup_cpu[k].spread("{:.2f}"),
            idle_cpu[k].spread("{:.1f}"),
        ]
        for k in ks
    ]
    print(f"\n## Rooms: the k-th member joining a mesh ({args.runs} runs)\n")
    print(
        table(
            [
                "k",
                "links to open",
                "connect s",
                "vs k=2",
                "setup CPU (cores)",
                "idle CPU/member %",
            ],
            rows,
            numbers_right=True,
        )
    )
    print(f"\n{machine('aiortc', 'aioice', 'websockets')}")


if __name__ == "__main__":
    main()
