"""Allocator targets for benchmarks and chaos runs: NMM heaps and peer allocators.

A ``Target`` says how to run the native driver against one allocator: the driver's
own ``--target`` (an NMM heap inside the driver, or the process's ``malloc``), the
NMM options, and for peers the ``LD_PRELOAD`` libraries and environment. Peers are
found by searching the usual library directories; a peer that is not installed is
still listed (``installed=False``, ``missing`` says what was looked for), never an error.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UnsupportedFeature
from harness.plan import LibTarget, MallocTarget, NmmTarget

#: Where shared libraries are searched, in order.
LIB_DIRS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)

#: Environment variables that change which allocator runs or how; removed from a
#: child's environment unless the target sets them itself.
ALLOCATOR_ENV: tuple[str, ...] = ("LD_PRELOAD", "NMM_OPTIONS", "MALLOC_CHECK_", "MALLOC_CONF")

#: The target every ratio is taken against.
BASELINE = "glibc"

_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One allocator the driver can run against.

    ``driver_target`` is the driver's ``--target`` (``nmm`` or ``malloc``);
    ``preload`` are absolute library paths for ``LD_PRELOAD`` (empty for glibc and
    NMM heaps); ``env`` are extra environment pairs; ``scale`` shrinks benchmark op
    counts for allocators that are slow by design and ``max_ops`` caps them (Electric
    Fence and DUMA keep a mapping per block, and a process may hold only ~65k).
    """

    name: str
    description: str
    driver_target: str
    nmm_options: str = ""
    preload: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    installed: bool = True
    missing: str = ""
    scale: float = 1.0
    max_ops: int | None = None
    #: the Debian package that provides it ("" for glibc, NMM heaps and user libraries)
    package: str = ""

    @property
    def is_nmm_heap(self) -> bool:
        """Whether the driver runs an NMM heap itself (fail points and events available)."""
        return self.driver_target == "nmm"

    def driver_args(self) -> list[str]:
        """The driver's ``--target`` (and ``--nmm-options``) arguments for this target."""
        args = ["--target", self.driver_target]
        if self.is_nmm_heap:
            args += ["--nmm-options", self.nmm_options]
        return args

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a driver child: ``base`` (default ``os.environ``) without
        inherited allocator settings, plus this target's ``LD_PRELOAD`` and variables."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if k not in ALLOCATOR_ENV}
        if self.preload:
            env["LD_PRELOAD"] = ":".join(self.preload)
        env.update(dict(self.env))
        return env


@dataclass(frozen=True)
class _PeerSpec:
    name: str
    description: str
    libraries: tuple[str, ...]  # file names (first found wins) or absolute globs
    env: tuple[tuple[str, str], ...] = ()
    scale: float = 1.0
    max_ops: int | None = None
    package: str = ""


_PEERS: tuple[_PeerSpec, ...] = (
    _PeerSpec("glibc-debug", "glibc with its checking malloc (MALLOC_CHECK_=3)",
              ("libc_malloc_debug.so.0",), (("MALLOC_CHECK_", "3"),), 0.5, package="libc6"),
    _PeerSpec("jemalloc", "jemalloc 5", ("libjemalloc.so.2", "libjemalloc.so"),
              package="libjemalloc2"),
    _PeerSpec("mimalloc", "mimalloc 2", ("libmimalloc.so.2", "libmimalloc.so"),
              package="libmimalloc2.0"),
    _PeerSpec("tcmalloc", "gperftools tcmalloc (minimal)",
              ("libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so"),
              package="libtcmalloc-minimal4"),
    _PeerSpec("tcmalloc-debug", "gperftools tcmalloc debug allocator",
              ("libtcmalloc_debug.so.4", "libtcmalloc_debug.so"), (), 0.01,
              package="libgoogle-perftools4"),
    _PeerSpec("scudo", "LLVM Scudo (standalone, clang-rt)",
              ("/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.scudo_standalone-x86_64.so",),
              package="libclang-rt-14-dev"),
    _PeerSpec("efence", "Electric Fence (a guard page per block)",
              ("libefence.so.0", "libefence.so"), (("EF_ALLOW_MALLOC_0", "1"),), 0.01, 5000,
              package="electric-fence"),
    _PeerSpec("duma", "DUMA (a guard page per block)", ("libduma.so.0", "libduma.so"),
              (("DUMA_DISABLE_BANNER", "1"), ("DUMA_ALLOW_MALLOC_0", "1")), 0.01, 5000,
              package="duma"),
)

_NMM_LEVELS: tuple[tuple[str, str, str], ...] = (
    ("nmm", "level=off", "NMM heap, level=off (pointer validation only)"),
    ("nmm-standard", "level=standard", "NMM heap, level=standard (checksums, canaries)"),
    ("nmm-paranoid", "level=paranoid", "NMM heap, level=paranoid (poison, quarantine, guards)"),
    ("nmm-tracking", "level=standard:tracking=1:stacks=1/64",
     "NMM heap, level=standard with allocation tracking (stacks 1/64)"),
)

#: NMM as a malloc replacement (LD_PRELOAD): name, NMM_OPTIONS, description. The tracking
#: one is what a user diagnosing leaks runs (default 1/64 stack sampling, the leak report
#: at exit; exitcode=0 keeps the program's status): the bench's real-program kernels
#: (git, gcc) measure its cost against glibc.
_NMM_PRELOAD: tuple[tuple[str, str, str], ...] = (
    ("nmm-preload", "level=off", "level=off"),
    ("nmm-preload-standard", "level=standard", "level=standard"),
    ("nmm-preload-standard-nocopy", "level=standard:copy_check=0",
     "level=standard without the checked memcpy & co. (what the copy check costs)"),
    ("nmm-preload-tracking", "level=standard:tracking=1:exitcode=0",
     "level=standard, tracking with 1/64 sampled stacks, leak report at exit"),
)


def _version_key(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path)]


def preload_problem(target: Target, timeout_s: float = 30.0) -> str | None:
    """Why ``target``'s ``LD_PRELOAD`` libraries do not load (the dynamic loader's own
    message), or None if they load or there are none. ld.so only warns and goes on with
    the system malloc, so a broken peer would otherwise be measured and judged as glibc."""
    if not target.preload:
        return None
    from harness._isolate import run_program

    try:
        proc = run_program(["true"], timeout_s, env=target.child_env())
    except OSError as exc:
        return f"cannot run a program with LD_PRELOAD={':'.join(target.preload)}: {exc}"
    if proc.timed_out:
        return (f"a program with LD_PRELOAD={':'.join(target.preload)} did not finish "
                f"in {timeout_s:g} s")
    said = [ln.strip() for ln in proc.stderr.splitlines() if "LD_PRELOAD" in ln]
    return said[0] if said else None


def find_library(candidates: Sequence[str], lib_dirs: Iterable[str] = LIB_DIRS) -> str | None:
    """The first existing library among ``candidates`` (file names searched in
    ``lib_dirs``, or absolute glob patterns, newest version first), or None."""
    dirs = list(lib_dirs)
    for cand in candidates:
        if os.path.isabs(cand):
            hits = sorted(glob.glob(cand), key=_version_key, reverse=True)
            if hits:
                return hits[0]
            continue
        for d in dirs:
            path = os.path.join(d, cand)
            if os.path.isfile(path):
                return path
    return None


def nmm_preload_library() -> Path:
    """Where ``pip install -e .`` puts NMM's malloc replacement."""
    return _REPO / "allocator" / "_native" / "libnmm_preload.so"


def all_targets(lib_dirs: Iterable[str] = LIB_DIRS) -> tuple[Target, ...]:
    """Every known target, installed or not: glibc, the NMM levels, NMM as a malloc
    replacement, then the peers."""
    dirs = tuple(lib_dirs)
    targets: list[Target] = [
        Target(BASELINE, "glibc malloc (the system allocator, no preload)", "malloc"),
    ]
    for name, options, description in _NMM_LEVELS:
        targets.append(Target(name, description, "nmm", nmm_options=options))
    preload = nmm_preload_library()
    for name, options, how in _NMM_PRELOAD:
        targets.append(Target(
            name, f"NMM as the process malloc (libnmm_preload.so, {how})", "malloc",
            preload=(str(preload),), env=(("NMM_OPTIONS", options),),
            installed=preload.is_file(),
            missing="" if preload.is_file() else f"{preload} (built by `pip install -e .`)"))
    for spec in _PEERS:
        lib = find_library(spec.libraries, dirs)
        targets.append(Target(
            spec.name, spec.description, "malloc", preload=(lib,) if lib else (),
            env=spec.env, installed=lib is not None, scale=spec.scale, max_ops=spec.max_ops,
            missing="" if lib else f"{' or '.join(spec.libraries)} in {', '.join(dirs)}",
            package=spec.package))
    return tuple(targets)


def target_names() -> tuple[str, ...]:
    """Names of every known target, in display order."""
    return tuple(t.name for t in all_targets())


def get_target(name: str, lib_dirs: Iterable[str] = LIB_DIRS) -> Target:
    """The target called ``name``; ``KeyError`` naming the valid names if unknown."""
    for t in all_targets(lib_dirs):
        if t.name == name:
            return t
    raise KeyError(f"unknown target {name!r}; expected one of {', '.join(target_names())}")


def not_installed(target: Target) -> str:
    """One line on a peer that is not installed: what was looked for and the Debian
    package that provides it."""
    how = (f"; install the Debian package {target.package} (apt-get install "
           f"{target.package})" if target.package else "")
    return f"{target.name} is not installed (looked for {target.missing}){how}"


def resolve_target(target: NmmTarget | MallocTarget | LibTarget) -> Target:
    """The runnable ``Target`` of a plan's ``target``: an NMM heap with the plan's options,
    the installed peer a ``malloc:<peer>`` target names, or a user's library. Raises
    ``UnsupportedFeature`` (naming the key) for an unknown peer, an NMM heap named as a
    peer, a peer that is not installed or a library that is not there."""
    if isinstance(target, NmmTarget):
        options = target.nmm_options()
        env = target.process_env()
        return Target(target.label, f"NMM heap ({options})"
                      + "".join(f" {k}={v}" for k, v in env.items()), "nmm",
                      nmm_options=options, env=tuple(sorted(env.items())))
    if isinstance(target, LibTarget):
        path = os.path.abspath(target.path)
        if not os.path.isfile(path):
            raise UnsupportedFeature(f"target.path: {target.path}: no such file (a shared "
                                     "library that replaces malloc)")
        return Target(target.label, f"user library {path}", "malloc", preload=(path,),
                      env=tuple(sorted(target.env.items())))
    try:
        peer = get_target(target.peer)
    except KeyError as exc:
        raise UnsupportedFeature(f"target.peer: {exc.args[0]}") from None
    if peer.driver_target != "malloc":
        raise UnsupportedFeature(f"target.peer: {target.peer!r} is an NMM heap; use "
                                 "kind = \"nmm\" with a level instead")
    if not peer.installed:
        raise UnsupportedFeature(f"target.peer: {not_installed(peer)}")
    return peer
