"""The environment a run ran in, for reports: machine, versions, build ids, libraries.

``capture`` reads the machine (platform, CPUs, kernel), the Python and nmm-chaos
versions, the repository's commit when there is one, the build ids of the native
driver and NMM's preload library, and each installed peer's library with its Debian
package version. Best effort: anything it cannot read is left out, never raised.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import struct
from importlib import metadata
from pathlib import Path
from typing import Any

from harness._isolate import run_program
from harness._peers import all_targets, nmm_preload_library

_REPO = Path(__file__).resolve().parent.parent


def build_id(path: str | Path) -> str:
    """The ELF ``NT_GNU_BUILD_ID`` of a binary (hex), else ``sha256:`` of its first 16
    hex digits; "" if it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    found = _elf_build_id(data)
    return found or "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _elf_build_id(data: bytes) -> str:
    """The build id from an ELF64 little-endian file's note sections ("" if none)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return ""
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        for i in range(shnum):
            base = shoff + i * shentsize
            sh_type, = struct.unpack_from("<I", data, base + 4)
            if sh_type != 7:  # SHT_NOTE
                continue
            off, size = struct.unpack_from("<QQ", data, base + 0x18)
            pos = off
            while pos + 12 <= off + size:
                namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
                name_end = pos + 12 + ((namesz + 3) & ~3)
                if ntype == 3 and data[pos + 12:pos + 12 + namesz].rstrip(b"\0") == b"GNU":
                    return data[name_end:name_end + descsz].hex()
                pos = name_end + ((descsz + 3) & ~3)
    except struct.error:
        return ""
    return ""


def _git_commit() -> str:
    try:
        proc = run_program(["git", "-C", str(_REPO), "rev-parse", "--short=12", "HEAD"], 10)
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _package_version(package: str) -> str:
    try:
        proc = run_program(["dpkg-query", "-W", "-f", "${Version}", package], 10)
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def capture(target_labels: set[str] | None = None) -> dict[str, Any]:
    """The environment of this machine, for the targets named (``malloc:<peer>`` labels;
    None: every installed peer)."""
    from harness._driver import driver_path
    from harness.errors import DriverNotFound

    try:
        version = metadata.version("nmm-chaos")
    except metadata.PackageNotFoundError:
        version = ""
    env: dict[str, Any] = {
        "host": socket.gethostname(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "kernel": platform.release(),
        "os": platform.platform(terse=True), "python": platform.python_version(),
        "nmm_chaos": version, "commit": _git_commit(),
    }
    try:
        driver = driver_path()
        env["driver"] = {"path": str(driver), "build_id": build_id(driver)}
    except DriverNotFound:
        pass
    preload = nmm_preload_library()
    if preload.is_file():
        env["nmm_preload"] = {"path": str(preload), "build_id": build_id(preload)}
    peers = {}
    for t in all_targets():
        if not (t.installed and t.preload) or t.driver_target != "malloc":
            continue
        if target_labels is not None and f"malloc:{t.name}" not in target_labels:
            continue
        peers[t.name] = {"library": t.preload[0], "package": t.package,
                         "version": _package_version(t.package) if t.package else ""}
    env["peers"] = peers
    return env
