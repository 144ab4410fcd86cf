"""Start-up: the CLIs import only what the chosen command uses.

``--help``, ``--version`` and ``rtc-signal token`` must not import the heavy
libraries (aiortc and PyAV: ~0.2-0.5 s; websockets, pydantic, asyncio), and
the packages' lazily loaded names must all resolve. What this saves is
measured by benchmarks/startup.py, not here: no timed assertions.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys

import pytest

HEAVY = ("aiortc", "aioice", "av", "websockets", "pydantic", "asyncio", "cryptography")

# Runs one CLI invocation in-process and prints, as JSON, its exit status and
# which of the HEAVY top-level packages it imported.
PROBE = """
import json, sys
module, argv, heavy = sys.argv[1], sys.argv[2:], {heavy!r}
sys.argv = [module] + argv
import importlib
main = importlib.import_module(module).main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code or 0
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
sys.stdout.flush()
print("\\n" + json.dumps({{"code": code, "loaded": loaded}}))
"""


def probe(module: str, *argv: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"RTC_SIGNAL_SECRET": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("rtc_signal.peers.cli", ["--help"]),
        ("rtc_signal.peers.cli", ["--version"]),
        ("rtc_signal.peers.cli", ["offer", "--help"]),
        ("rtc_signal.peers.cli", ["answer", "--help"]),
        ("rtc_signal.signaling.cli", ["--help"]),
        ("rtc_signal.signaling.cli", ["--version"]),
        ("rtc_signal.signaling.cli", ["serve", "--help"]),
        (
            "rtc_signal.signaling.cli",
            ["token", "--id", "alice", "--secret", "0123456789abcdef0123"],
        ),
    ],
)
def test_light_commands_import_no_heavy_library(module: str, argv: list[str]) -> None:
    """--help, --version and `token` run without aiortc, PyAV, websockets, pydantic, asyncio."""
    report = probe(module, *argv)
    assert report == {"code": 0, "loaded": []}


def test_usage_errors_are_found_before_the_library_is_imported() -> None:
    """A bad option is a usage error (exit 2) without paying for the imports."""
    report = probe("rtc_signal.peers.cli", "offer", "--target", "x", "--interval", "nope")
    assert report == {"code": 2, "loaded": []}


@pytest.mark.parametrize(
    "package", ["rtc_signal.proto", "rtc_signal.signaling", "rtc_signal.peers"]
)
def test_every_exported_name_resolves(package: str) -> None:
    """Each name in a package's __all__ loads on first use; unknown names raise AttributeError."""
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ != "builtins":
            assert value.__module__.startswith(package + "."), (name, value.__module__)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        module.nonexistent  # noqa: B018
