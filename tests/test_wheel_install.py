"""What users get: the wheel built from this checkout, installed (not editable)
into a fresh venv beside proto-plus (whose import name is also ``proto``), and
run only through that venv's executables from a directory outside the checkout.

Building and installing need PyPI (setuptools for the build, the dependencies
for the install); the module is skipped only when pip fails on the network.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO, start_server_process, stop_server_process, subprocess_env
from tests.integration.procs import LOOPBACK, stop, wait, wait_registered

# building the wheel and installing it with its dependencies takes ~30-60 s
pytestmark = pytest.mark.timeout(900)

BUILD_TIMEOUT = 300
VENV_TIMEOUT = 120
INSTALL_TIMEOUT = 450
#: bound for one short command run from the venv (--version, python -c, pip check)
COMMAND_TIMEOUT = 60
#: bound for a whole timer call (3 messages 0.2 s apart, plus ICE on loopback)
CALL_TIMEOUT = 60
HTTP_TIMEOUT = 10

FOLDERS = ("proto", "signaling", "peers")
TIMER = ["--interval", "0.2", "--count", "3"]

#: what pip prints when it cannot reach the index (only these make the module skip)
NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "No address associated with hostname",
    "Network is unreachable",
    "No route to host",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "Could not fetch URL",
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    #: the working directory of every command: a temporary one outside the checkout
    cwd: Path
    env: dict[str, str]

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def run(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``venv/bin/NAME ARGS`` from :attr:`cwd` (bounded by COMMAND_TIMEOUT)."""
        return subprocess.run(
            [str(self.bin(name)), *args],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )


def _clean_env() -> dict[str, str]:
    """Our environment without what would make a venv command see something else
    than what is installed in it (the checkout, another Python, rtc-signal settings)."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    return {k: v for k, v in subprocess_env().items() if k not in dropped and k[:4] != "RTC_"}


def _quiet_run(
    argv: list[str], timeout: float, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with no stdin, its output captured, bounded by ``timeout``."""
    return subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def _pip(what: str, argv: list[str], timeout: float, cwd: Path, env: dict[str, str]) -> None:
    """Run a pip command; skip the module on a network error, fail on anything else."""
    done = _quiet_run(argv, timeout, cwd, env)
    if done.returncode == 0:
        return
    output = done.stdout + done.stderr
    marker = next((m for m in NETWORK_ERRORS if m in output), None)
    if marker is not None:
        last = output.strip().splitlines()[-1]
        pytest.skip(f"{what} needs PyPI, and the network failed ({marker}): {last}")
    pytest.fail(f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n{output[-6000:]}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel of this checkout and a fresh venv with it and proto-plus installed."""
    root = tmp_path_factory.mktemp("wheel-install")
    cwd = root / "outside"
    cwd.mkdir()
    assert not cwd.resolve().is_relative_to(REPO.resolve()), "the temporary dir is in the checkout"
    env = _clean_env()

    # Build from a copy of the tracked files, as CI's fresh clone would: a
    # build in the checkout reuses its build/lib, which may still hold modules
    # that were moved or deleted since, and they would ship in the wheel.
    source = root / "source"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"],
        capture_output=True,
        check=True,
        timeout=COMMAND_TIMEOUT,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():  # a tracked file deleted in the work tree is gone
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = root / "dist"
    _pip(
        "building the wheel",
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(source)],
        BUILD_TIMEOUT,
        cwd,
        env,
    )
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}: {wheels}"

    venv = root / "venv"
    made = _quiet_run([sys.executable, "-m", "venv", str(venv)], VENV_TIMEOUT, cwd, env)
    assert made.returncode == 0, f"python -m venv failed:\n{made.stdout}{made.stderr}"
    python = str(venv / "bin" / "python")
    _pip(
        "installing the wheel and proto-plus",
        [python, "-m", "pip", "install", "--no-input", str(wheels[0]), "proto-plus"],
        INSTALL_TIMEOUT,
        cwd,
        env,
    )
    return Installed(wheels[0], venv, cwd, env)


@pytest.fixture(scope="module")
def installed_version(installed: Installed) -> str:
    """The version of the installed distribution, as importlib.metadata reports it."""
    done = installed.run(
        "python", "-c", "import importlib.metadata as m; print(m.version('rtc-signal'))"
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def tracked_in_wheel() -> set[str]:
    """Where each git-tracked file of proto/, signaling/, peers/ belongs in the wheel."""
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", *FOLDERS],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=True,
    ).stdout.split("\0")
    expected = {f"rtc_signal/{path}" for path in tracked if path}
    assert len(expected) > 30, f"git ls-files found too little: {sorted(expected)}"
    return expected


@pytest.fixture(scope="module")
def installed_server(installed: Installed) -> Iterator[str]:
    """``venv/bin/rtc-signal serve --port 0`` on 127.0.0.1; yields its ws:// URL."""
    proc, url = start_server_process(
        program=installed.bin("rtc-signal"), cwd=installed.cwd, env=installed.env
    )
    try:
        assert urlsplit(url).hostname == "127.0.0.1", f"not a loopback URL: {url}"
        yield url
    finally:
        stop_server_process(proc)


@contextlib.contextmanager
def _peer(installed: Installed, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``venv/bin/rtc-peer ARGS`` from outside the checkout; stopped (SIGTERM, then
    SIGKILL) on exit if it is still running."""
    proc = subprocess.Popen(
        [str(installed.bin("rtc-peer")), *args],
        cwd=installed.cwd,
        env=installed.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            stop(proc)


def _get(url: str) -> tuple[int, str, bytes]:
    """GET ``url`` straight (no proxy from the environment); (status, content type, body)."""
    assert urlsplit(url).hostname == "127.0.0.1", url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=HTTP_TIMEOUT) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


@pytest.mark.parametrize("name", ["rtc-peer", "rtc-signal"])
def test_console_script_prints_the_installed_version(
    installed: Installed, installed_version: str, name: str
) -> None:
    """Each console script runs from the venv and --version prints the installed version."""
    done = installed.run(name, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{name}, version {installed_version}"
    assert installed.wheel.name.startswith(f"rtc_signal-{installed_version}-")


def test_wheel_holds_every_tracked_file_and_no_tests_or_examples(
    installed: Installed, tracked_in_wheel: set[str]
) -> None:
    """Every git-tracked file of proto/, signaling/, peers/ is in the wheel under rtc_signal/."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    missing = sorted(tracked_in_wheel - names)
    assert missing == [], f"tracked files missing from {installed.wheel.name}: {missing}"
    # neither as top-level packages nor inside rtc_signal/
    assert [n for n in names if {"tests", "examples"} & set(n.split("/")[:2])] == []


def test_wheel_holds_nothing_but_tracked_files(
    installed: Installed, tracked_in_wheel: set[str]
) -> None:
    """The wheel's rtc_signal/ is exactly the tracked files: no stale build/lib or scratch file."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        package = {n for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    # setuptools builds in the checkout's build/lib and never empties it: a module
    # that was moved or deleted since an earlier build ships too (rm -rf build)
    extra = sorted(package - tracked_in_wheel)
    assert extra == [], f"in the wheel but not tracked by git (stale build/lib?): {extra}"


def test_installed_server_and_peers_exchange_timer_messages(
    installed: Installed, installed_server: str
) -> None:
    """The installed rtc-signal and two rtc-peer processes exchange 3 timer messages on loopback."""
    url = installed_server
    with _peer(installed, "answer", "--id", "wheel-a", "--signal", url, *LOOPBACK, *TIMER) as ans:
        wait_registered(ans)
        with _peer(
            installed, "offer", "--target", "wheel-a", "--signal", url, *LOOPBACK, *TIMER
        ) as off:
            offered = wait(off, CALL_TIMEOUT)
        answered = wait(ans, CALL_TIMEOUT)
    assert offered.returncode == 0, offered.stderr
    assert answered.returncode == 0, answered.stderr
    assert offered.lines("recv ") == [f"recv answer-{n}" for n in range(1, 4)]
    assert offered.lines("sent ") == [f"sent offer-{n}" for n in range(1, 4)]
    assert answered.lines("recv ") == [f"recv offer-{n}" for n in range(1, 4)]


def test_installed_server_serves_the_page_and_the_js_client(installed_server: str) -> None:
    """The installed server serves / and /rtc-signal.js, the same bytes as the checkout."""
    base = f"http://127.0.0.1:{urlsplit(installed_server).port}"
    static = REPO / "signaling" / "static"

    status, content_type, body = _get(base + "/")
    assert status == 200
    assert content_type.split(";")[0].strip() == "text/html"
    assert body == (static / "index.html").read_bytes()

    status, content_type, body = _get(base + "/rtc-signal.js")
    assert status == 200
    assert content_type.split(";")[0].strip() in ("text/javascript", "application/javascript")
    assert body, "empty /rtc-signal.js"
    assert body == (static / "rtc-signal.js").read_bytes()


def test_proto_plus_and_rtc_signal_proto_import_side_by_side(installed: Installed) -> None:
    """``import proto`` is still proto-plus and rtc_signal.proto is ours, both from the venv."""
    code = (
        "import proto; proto.Field; import rtc_signal.proto; print(rtc_signal.proto.Command)\n"
        "print(proto.__file__); print(rtc_signal.proto.__file__)"
    )
    done = installed.run("python", "-c", code)
    assert done.returncode == 0, done.stderr
    command, proto_file, ours_file = done.stdout.splitlines()
    assert command == "<enum 'Command'>"
    site = installed.venv.resolve() / "lib"
    assert Path(proto_file).resolve().is_relative_to(site), proto_file
    assert Path(proto_file).resolve().parent.name == "proto"
    assert Path(ours_file).resolve().is_relative_to(site), ours_file
    assert Path(ours_file).resolve().parts[-3:-1] == ("rtc_signal", "proto")


def test_pip_check_finds_no_broken_requirement(installed: Installed) -> None:
    """``pip check`` in the venv exits 0: proto-plus and rtc-signal's dependencies agree."""
    done = installed.run("python", "-m", "pip", "check")
    assert done.returncode == 0, done.stdout + done.stderr
