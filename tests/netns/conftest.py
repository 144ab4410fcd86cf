"""Fixtures of the network-namespace tests: one private Internet (namespaces,
NATs, coturn and rtc-signal in the WAN) per module, removed at its end."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import server_command
from tests.netns.lab import (
    WAN_ADDR,
    Internet,
    Lab,
    Proc,
    build_internet,
    start_coturn,
    wait_for,
    why_not_available,
)

SIGNAL_PORT = 18080

#: why these tests cannot run on this machine (None: they can)
UNAVAILABLE = why_not_available()


@dataclass
class World:
    net: Internet
    signal_url: str
    coturn: Proc

    @property
    def lab(self) -> Lab:
        return self.net.lab


def make_world(lab: Lab, **topology: bool) -> World:
    """Build the topology in ``lab`` (``topology``: build_internet's options),
    start coturn and `rtc-signal serve` in its WAN."""
    net = build_internet(lab, nats=2, **topology)
    coturn = start_coturn(net)
    server = lab.spawn(
        net.wan,
        "rtc-signal",
        server_command("serve", "--host", WAN_ADDR, "--port", str(SIGNAL_PORT)),
    )
    wait_for(lambda: "listening on" in server.stdout(), "rtc-signal to listen", server)
    return World(net, f"ws://{WAN_ADDR}:{SIGNAL_PORT}", coturn)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The topology of tests/netns/lab.py with coturn and `rtc-signal serve` in the WAN."""
    lab = Lab(tmp_path_factory.mktemp("netlab"))
    try:
        yield make_world(lab)
    finally:
        lab.close()


class Peers:
    """Starts `rtc-peer` processes in namespaces; stops them after the test."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.started: list[Proc] = []

    def start(self, ns: str, name: str, role: str, *args: str) -> Proc:
        argv = [
            sys.executable,
            "-m",
            "rtc_signal.peers.cli",
            role,
            "--signal",
            self.world.signal_url,
            *args,
        ]
        proc = self.world.lab.spawn(ns, name, argv)
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.started:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(5)


@pytest.fixture
def peers(world: World) -> Iterator[Peers]:
    started = Peers(world)
    try:
        yield started
    finally:
        started.stop()
