"""A private Internet in network namespaces, for tests (root only).

:class:`Lab` creates namespaces, veth pairs (both ends always inside
namespaces it created, so nothing touches the machine's interfaces), routes
and iptables rules, starts processes inside them, and removes all of it on
:meth:`Lab.close` (processes first, then namespaces, which takes their
links, addresses and rules with them), whatever happened before. Names carry
the pid and a counter, so concurrent or leftover runs never collide.

:func:`build_internet` makes this topology (documentation and CGNAT ranges,
never the machine's own; see ``../shared/docs/NETWORK-TESTS.md``)::

                 wan (router; coturn and rtc-signal on 198.51.100.1)
      198.51.100.1/30 |     203.0.113.1/30 |         203.0.113.5/30 |
                 pub .2            nat0 .2 (MASQUERADE)    nat1 .6 (MASQUERADE)
                                100.64.0.1/24 |         100.64.1.1/24 |
                                     priv0 .2                priv1 .2

The WAN has a default route into an ``ifb`` device, which silently drops
what it gets, as the Internet does with packets to nowhere. Without it,
coturn's ``sendto()`` towards a private address fails with ENETUNREACH and
coturn 4.6.1 closes the whole allocation (the 438/400 seen on ChannelBind).
Each NAT has the usual stateful firewall on its outside interface; with
MASQUERADE alone it behaves symmetrically (see NETWORK-TESTS.md).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_counter = itertools.count(1)

WAN_ADDR = "198.51.100.1"
PUB_ADDR = "198.51.100.2"
#: as in the README's example configuration
TURN_USER, TURN_PASSWORD = "rtc", "change-me"
TURN_PORT = 3478


def why_not_available() -> str | None:
    """Why netns tests cannot run here (None if they can)."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (they run in CI, which is root)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 iptables)"
    if shutil.which("turnserver") is None:
        return "coturn is not installed (apt-get install coturn)"
    probe = f"rtcs-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(argv: list[str], timeout: float = 10) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class Proc:
    """A process started in a namespace; stdout and stderr go to files."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text("utf-8", "replace")

    def stderr(self) -> str:
        return self.err.read_text("utf-8", "replace")

    def wait(self, timeout: float) -> int:
        """The exit status; killed (and AssertionError) if it does not exit in time."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s:\n{self.stderr()[-3000:]}"
            ) from None


@dataclass
class Lab:
    """Namespaces, links, rules and processes of one test run; :meth:`close` removes all."""

    logs: Path
    tag: str = field(default_factory=lambda: f"rtcs{os.getpid()}n{next(_counter)}")
    namespaces: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)

    def ns(self, name: str) -> str:
        """A new namespace (``<tag>-<name>``) with ``lo`` up; its full name."""
        full = f"{self.tag}-{name}"
        _run(["ip", "netns", "add", full])
        self.namespaces.append(full)
        self.ip(full, "link", "set", "lo", "up")
        return full

    def ip(self, ns: str, *args: str) -> str:
        return _run(["ip", "-n", ns, *args])

    def sh(self, ns: str, *argv: str, timeout: float = 10) -> str:
        """Run ``argv`` inside ``ns`` and return its stdout (RuntimeError on failure)."""
        return _run(["ip", "netns", "exec", ns, *argv], timeout)

    def link(self, a: str, a_if: str, a_addr: str, b: str, b_if: str, b_addr: str) -> None:
        """A veth pair from namespace ``a`` to ``b``, addressed (CIDR) and up."""
        self.ip(a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b)
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            self.ip(ns, "addr", "add", addr, "dev", ifname)
            self.ip(ns, "link", "set", ifname, "up")

    def forward(self, ns: str) -> None:
        """Make ``ns`` a router (IPv4 forwarding; no dependency on procps' sysctl)."""
        self.sh(ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")

    def iptables(self, ns: str, *rule: str) -> None:
        self.sh(ns, "iptables", "-w", *rule)

    def spawn(self, ns: str, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start ``argv`` inside ``ns``; output in ``logs/<name>.out|.err``."""
        out, err = self.logs / f"{name}.out", self.logs / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env={**os.environ, **(env or {})},
            )
        proc = Proc(name, popen, out, err)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop every process, then delete every namespace (with its links and
        rules). Never raises: it runs in ``finally`` blocks."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(5)
        for ns in reversed(self.namespaces):
            # anything still running in it was started by us (e.g. a child)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()

    def leftovers(self) -> list[str]:
        """Namespaces of this lab that still exist (for the clean-up test)."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in listed.splitlines() if line.startswith(self.tag)]


@dataclass
class Internet:
    """The namespaces of :func:`build_internet` and their peers' addresses."""

    lab: Lab
    wan: str
    pub: str
    nats: list[str]
    privs: list[str]

    @staticmethod
    def priv_addr(i: int) -> str:
        return f"100.64.{i}.2"

    @staticmethod
    def nat_outside(i: int) -> str:
        return f"203.0.113.{4 * i + 2}"


def build_internet(
    lab: Lab,
    nats: int = 2,
    wan_default_route: bool = True,
    firewall: bool = True,
    symmetric: bool = False,
) -> Internet:
    """The topology of the module docstring, with ``nats`` NATed networks.

    ``wan_default_route=False`` and ``firewall=False`` rebuild the set-ups
    that failed (see the module docstring), for experiments. ``symmetric``
    maps every new destination to a random port (``--random-fully``): a
    symmetric NAT for sure, where MASQUERADE alone is symmetric only when an
    inbound packet happens to come first (a race, so tests cannot rely on it).
    """
    wan, pub = lab.ns("wan"), lab.ns("pub")
    lab.forward(wan)
    lab.link(wan, "pub0", f"{WAN_ADDR}/30", pub, "eth0", f"{PUB_ADDR}/30")
    lab.ip(pub, "route", "add", "default", "via", WAN_ADDR)
    if wan_default_route:  # the Internet's default route: a device that drops everything
        lab.ip(wan, "link", "add", "void0", "type", "ifb")
        lab.ip(wan, "link", "set", "void0", "up")
        lab.ip(wan, "route", "add", "default", "dev", "void0")
    nat_names, priv_names = [], []
    for i in range(nats):
        nat, priv = lab.ns(f"nat{i}"), lab.ns(f"priv{i}")
        wan_side, outside = f"203.0.113.{4 * i + 1}", Internet.nat_outside(i)
        lab.link(wan, f"nat{i}", f"{wan_side}/30", nat, "out", f"{outside}/30")
        lab.ip(nat, "route", "add", "default", "via", wan_side)
        lab.link(nat, "in", f"100.64.{i}.1/24", priv, "eth0", f"{Internet.priv_addr(i)}/24")
        lab.ip(priv, "route", "add", "default", "via", f"100.64.{i}.1")
        lab.forward(nat)
        random = ["--random-fully"] if symmetric else []
        lab.iptables(
            nat, "-t", "nat", "-A", "POSTROUTING", "-o", "out", "-j", "MASQUERADE", *random
        )
        if firewall:
            for chain in ("INPUT", "FORWARD"):
                lab.iptables(
                    nat, "-A", chain, "-i", "out", "-m", "conntrack",
                    "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT",
                )  # fmt: skip
                lab.iptables(nat, "-A", chain, "-i", "out", "-j", "DROP")
        nat_names.append(nat)
        priv_names.append(priv)
    return Internet(lab, wan, pub, nat_names, priv_names)


README = Path(__file__).resolve().parents[2] / "README.md"
#: the address the README's example configuration uses
README_TURN_ADDR = "203.0.113.10"


def readme_turnserver_conf() -> str:
    """The README's example turnserver.conf (the first ``ini`` block of its
    "TURN set-up with coturn" section): the tests run coturn with it."""
    text = README.read_text()
    section = text[text.index("## TURN set-up with coturn") :]
    block = section[section.index("```ini\n") + len("```ini\n") :]
    return block[: block.index("```")]


def start_coturn(net: Internet, extra: str = "") -> Proc:
    """coturn in the WAN with the README's configuration (on WAN_ADDR:3478,
    plus ``extra`` lines); waits until it listens."""
    tmp = net.lab.logs
    conf = tmp / "turnserver.conf"
    conf.write_text(
        readme_turnserver_conf().replace(README_TURN_ADDR, WAN_ADDR)
        + extra
        + f"\nlog-file=stdout\nsimple-log\npidfile={tmp}/turnserver.pid\n"
        f"userdb={tmp}/turnserver.db\n"
    )
    proc = net.lab.spawn(net.wan, "coturn", ["turnserver", "-c", str(conf)])
    wait_for(
        lambda: f"{WAN_ADDR}:{TURN_PORT}" in net.lab.sh(net.wan, "ss", "-Huln"),
        "coturn to listen",
        proc,
    )
    return proc


def wait_for(condition: Callable[[], bool], what: str, proc: Proc, timeout: float = 15) -> None:
    """Poll ``condition``; AssertionError (with ``proc``'s stderr) on timeout or if it exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.popen.poll() is not None:
            raise AssertionError(
                f"{proc.name} exited {proc.popen.returncode} waiting for {what}:\n"
                f"{proc.stdout()[-2000:]}{proc.stderr()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
