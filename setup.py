"""Package discovery: the user's layout in, one owned namespace out.

The repository keeps ``proto/``, ``signaling/`` and ``peers/`` as top-level
folders; they install as ``rtc_signal.proto``, ``rtc_signal.signaling`` and
``rtc_signal.peers`` so that nothing clashes with other distributions (the
``proto`` of proto-plus, which every google-cloud library pulls in, above all).
pyproject.toml alone cannot do this: its package finder keeps folder names and
its ``package-dir`` needs every subpackage listed by hand. Here every folder is
discovered, and every file in it that is not Python source is package data, so
a new subpackage, page or marker file can never be left out of the wheel.
Everything else lives in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_namespace_packages, setup

NAMESPACE = "rtc_signal"
FOLDERS = ("proto", "signaling", "peers")
ROOT = Path(__file__).resolve().parent
NOT_DATA = {".py", ".pyc", ".pyo"}

packages: list[str] = []
package_dir: dict[str, str] = {}
package_data: dict[str, list[str]] = {}
for folder in FOLDERS:
    package_dir[f"{NAMESPACE}.{folder}"] = folder
    # namespace discovery also finds data folders such as signaling/static/,
    # which setuptools wants listed as packages to ship their files
    found = find_namespace_packages(str(ROOT / folder), exclude=["*__pycache__*"])
    for sub in (folder, *(f"{folder}.{name}" for name in found)):
        path = ROOT.joinpath(*sub.split("."))
        packages.append(f"{NAMESPACE}.{sub}")
        package_data[f"{NAMESPACE}.{sub}"] = sorted(
            p.name for p in path.iterdir() if p.is_file() and p.suffix not in NOT_DATA
        )

setup(packages=packages, package_dir=package_dir, package_data=package_data)
