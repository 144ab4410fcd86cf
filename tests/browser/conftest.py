"""Fixtures for the tests in a real Chromium: a network namespace, a signaling
server and CLI peers inside it, and Playwright pages."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import harness
from tests.conftest import subprocess_env

WHY_NOT = harness.unavailable()
ARTIFACTS = Path(os.environ.get("RTC_TEST_ARTIFACTS", harness.REPO / "test-artifacts"))
LISTENING = re.compile(r"listening on (ws://\S+)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if WHY_NOT is None:
        return
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=WHY_NOT))


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    with harness.namespace(f"rtcb{os.getpid()}") as ns:
        yield ns


class Proc:
    """A subprocess in the namespace whose output lines are collected by a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
            cwd=harness.REPO,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in iter(stream.readline, ""):
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 20) -> Any:
        with self._changed:
            result = self._changed.wait_for(predicate, timeout)
        if not result:
            raise AssertionError(f"{what}: not within {timeout} s\n{self.output()}")
        return result

    def wait_line(
        self, pattern: str, what: str, stream: str = "stdout", timeout: float = 20
    ) -> str:
        lines = self.stdout if stream == "stdout" else self.stderr
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in lines if regex.search(line)), None)

        return str(self.wait_for(found, what, timeout))

    def output(self) -> str:
        return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr[-40:])

    def stop(self, timeout: float = 10) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        for reader in self._readers:
            reader.join(5)
        return self.popen.returncode


@pytest.fixture
def procs(netns: str) -> Iterator[Callable[..., Proc]]:
    """``start(module, *args) -> Proc`` inside the namespace; all stopped at teardown."""
    started: list[Proc] = []

    def start(module: str, *args: str) -> Proc:
        proc = Proc(harness.python_in(netns, module, *args))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_server(procs: Callable[..., Proc]) -> Callable[..., str]:
    """``start_server(*extra_args) -> ws:// URL``: a ``rtc-signal serve`` in the namespace."""

    def start(*extra: str) -> str:
        server = procs(
            "rtc_signal.signaling.cli", "serve", "--host", "127.0.0.1", "--port", "0", *extra
        )
        line = server.wait_line(r"listening on ws://", "server start", timeout=20)
        match = LISTENING.search(line)
        assert match is not None
        return match.group(1)

    return start


@pytest.fixture
def server_url(start_server: Callable[..., str]) -> str:
    """A ``rtc-signal serve`` in the namespace; its ws:// URL."""
    return start_server()


@pytest.fixture
def page_url(server_url: str) -> Callable[[str], str]:
    """``page_url("?id=x")``: the page's http:// URL on the test's server."""
    base = server_url.replace("ws://", "http://", 1)
    return lambda query="": f"{base}/{query}"


@pytest.fixture(scope="module")
def chromium(netns: str) -> Iterator[Any]:
    """A Playwright Browser: Debian's Chromium running inside the namespace."""
    from playwright.sync_api import sync_playwright

    with harness.chromium_wrapper(netns) as wrapper, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=wrapper, args=harness.CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Callable[[str], Any]]:
    """``new_page(url)``: a page in a fresh context (own storage), console kept."""
    contexts: list[Any] = []

    def open_page(url: str) -> Any:
        # bypass_csp: the page forbids eval; Playwright evaluates test expressions
        context = chromium.new_context(viewport={"width": 1100, "height": 800}, bypass_csp=True)
        contexts.append(context)
        page = context.new_page()
        page.console_lines = []
        page.on("console", lambda msg: page.console_lines.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: page.console_lines.append(f"pageerror: {exc}"))
        page.goto(url, timeout=20_000)
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
