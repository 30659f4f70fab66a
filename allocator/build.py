"""Build definitions for NMM: the cffi extension and the native artifacts.

The one source of truth for sources, flags and build flavors. Imported at build
time only: by setuptools through ``cffi_modules`` (``ffibuilder``), by ``setup.py``
for the native step (``build_native``), and run as ``python allocator/build.py
native [--flavor NAME]`` by ``make native``. Nothing at run time imports it.

The cdef is derived from ``allocator/include/nmm.h`` (comments and preprocessor
lines stripped, the ``NMM_STATS_FIELDS`` X-macro expanded), so the C API and its
stats field list are written once, in the header.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
ALLOCATOR = ROOT / "allocator"
INCLUDE_DIR = ALLOCATOR / "include"
SRC_DIR = ALLOCATOR / "src"
DRIVER_DIR = ROOT / "harness" / "native"
HEADER = INCLUDE_DIR / "nmm.h"
# Files linked only into libnmm_preload.so: the malloc family (malloc_shim.c),
# C++'s operator new and delete (new_shim.c), checked bulk copies (copy_shim.c), ...
SHIM_SUFFIX = "_shim.c"

CFLAGS = [
    "-std=gnu11",
    "-O2",
    "-g",
    "-fPIC",
    "-fvisibility=hidden",
    "-pthread",
    "-Wall",
    "-Wextra",
    # unwind tables (x86-64's default anyway): a std::bad_alloc thrown from the
    # preload library's operator new unwinds through its C frames
    "-fasynchronous-unwind-tables",
]
if os.uname().machine == "x86_64":
    CFLAGS.append("-msse4.2")
LIBRARIES = ["pthread", "m", "dl"]


class Flavor(NamedTuple):
    """A build flavor: the same sources with different defines and outputs.

    ``suffix`` is appended to artifact names (``libnmm{suffix}.so``), so flavors
    can live side by side in ``allocator/_native/``.
    """

    name: str
    defines: tuple[str, ...]
    suffix: str
    module: str  # the cffi extension module name


FLAVORS: dict[str, Flavor] = {
    "release": Flavor("release", (), "", "allocator._nmm_cffi"),
    # Yield points and run-time mutants for the controlled scheduler (design.md
    # "Chaos build"); the production build has neither.
    "chaos": Flavor("chaos", ("NMM_CHAOS",), "_chaos", "allocator._nmm_chaos_cffi"),
}


# ------------------------------------------------------------------ sources


def is_shim(path: Path) -> bool:
    """A source of the preload library only (``*_shim.c``)."""
    return path.name.endswith(SHIM_SUFFIX)


def allocator_sources(*, shim: bool) -> list[Path]:
    """The allocator's C sources, globbed; ``shim`` adds the preload library's
    entry points (the malloc family, C++'s operators)."""
    return sorted(p for p in SRC_DIR.glob("*.c") if shim or not is_shim(p))


def driver_sources() -> list[Path]:
    """The native driver's C sources (may be empty while it is being written)."""
    return sorted(DRIVER_DIR.glob("*.c"))


def _rel(path: Path) -> str:
    """A path relative to the repository root when building from it (setuptools
    wants relative extension sources), else absolute."""
    try:
        if Path.cwd().resolve() == ROOT:
            return str(path.relative_to(ROOT))
    except ValueError:
        pass
    return str(path)


# ------------------------------------------------------------------ cdef from nmm.h


def stats_fields(header_text: str | None = None) -> list[tuple[str, str]]:
    """The (name, description) pairs of the NMM_STATS_FIELDS X-macro in nmm.h."""
    text = HEADER.read_text() if header_text is None else header_text
    match = re.search(r"#define\s+NMM_STATS_FIELDS\(X\)\s*\\\n(.*?)(?<!\\)\n", text, re.S)
    if match is None:
        raise RuntimeError(f"{HEADER}: no NMM_STATS_FIELDS(X) X-macro found")
    fields = re.findall(r'X\(\s*(\w+)\s*,\s*"((?:[^"\\]|\\.)*)"\s*\)', match.group(1))
    if not fields:
        raise RuntimeError(f"{HEADER}: NMM_STATS_FIELDS(X) lists no fields")
    return fields


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def header_cdef(header_text: str | None = None) -> str:
    """Turn nmm.h into a cffi cdef.

    Keeps typedefs, enums, structs and prototypes; drops the C++ guard, macros
    with bodies and the NMM_API marker; keeps integer #defines as literal
    constants (cffi checks them against the compiled header in API mode) and
    expands the stats X-macro into field declarations.
    """
    text = HEADER.read_text() if header_text is None else header_text
    fields = stats_fields(text)
    text = _strip_comments(text)
    text = re.sub(r"#ifdef\s+__cplusplus.*?#endif", "", text, flags=re.S)
    text = text.replace("\\\n", " ")  # join continued lines (multi-line macros)
    constants: list[str] = []
    body: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            m = re.match(r"#\s*define\s+(NMM_[A-Z0-9_]+)\s+(-?\d+[uUlL]*)\s*$", stripped)
            if m:
                constants.append(f"#define {m.group(1)} {m.group(2)}")
            continue
        body.append(line)
    out = "\n".join(body)
    out = re.sub(r"\bNMM_API\b", "", out)
    decl = "".join(f"    uint64_t {name};\n" for name, _ in fields)
    out, count = re.subn(r"NMM_STATS_FIELDS\(\s*\w+\s*\)", decl, out)
    if count != 1:
        raise RuntimeError(f"{HEADER}: expected one NMM_STATS_FIELDS(...) use, found {count}")
    return "\n".join(constants) + "\n" + out


# Address-as-integer twins of the pointer calls, compiled into the extension only.
# Python passes and receives addresses as ints; going through these saves a cdata
# cast per call on the binding's hot path (ffi.cast costs more than the C call).
BINDING_SHIMS = """
static uintptr_t nmmpy_alloc(nmm_heap_t *h, size_t n, nmm_site_t s)
{ return (uintptr_t)nmm_alloc(h, n, s); }
static uintptr_t nmmpy_calloc(nmm_heap_t *h, size_t c, size_t n, nmm_site_t s)
{ return (uintptr_t)nmm_calloc(h, c, n, s); }
static uintptr_t nmmpy_realloc(nmm_heap_t *h, uintptr_t p, size_t n, nmm_site_t s)
{ return (uintptr_t)nmm_realloc(h, (void *)p, n, s); }
static uintptr_t nmmpy_aligned_alloc(nmm_heap_t *h, size_t a, size_t n, nmm_site_t s)
{ return (uintptr_t)nmm_aligned_alloc(h, a, n, s); }
static nmm_status_t nmmpy_free(nmm_heap_t *h, uintptr_t p, nmm_site_t s)
{ return nmm_free(h, (void *)p, s); }
static size_t nmmpy_usable_size(nmm_heap_t *h, uintptr_t p)
{ return nmm_usable_size(h, (const void *)p); }
static size_t nmmpy_requested_size(nmm_heap_t *h, uintptr_t p)
{ return nmm_requested_size(h, (const void *)p); }
static size_t nmmpy_copy(nmm_heap_t *h, uintptr_t d, uintptr_t src, size_t n, nmm_site_t s)
{ return nmm_copy(h, (void *)d, (const void *)src, n, s); }
static size_t nmmpy_usable_size_checked(nmm_heap_t *h, uintptr_t p, nmm_site_t s)
{ return nmm_usable_size_checked(h, (const void *)p, s); }
static uintptr_t nmmpy_alloc_as(nmm_heap_t *h, int family, size_t n, size_t a, nmm_site_t s)
{ return (uintptr_t)nmm_alloc_as(h, (nmm_family_t)family, n, a, s); }
static nmm_status_t nmmpy_free_as(nmm_heap_t *h, uintptr_t p, int family, size_t n, size_t a,
                                  nmm_site_t s)
{ return nmm_free_as(h, (void *)p, (nmm_family_t)family, n, a, s); }
"""


# The address-level handle of drivers' hot loops (``RawHeap`` in allocator/_binding.py):
# Python binds these calls to one ``nmmpy_raw_t`` (types.MethodType), so a driver op is
# one C call with no Python frame around it. ``heap`` is set to NULL when the Heap is
# closed; every call checks it, so a handle outliving its heap never touches freed memory.
#
# The fill pattern is folded into the same calls. The pattern of a 64-bit key is the
# little-endian bytes of the word (key + 1) * 0x9E3779B97F4A7C15 (mod 2**64; never zero
# for a small key, so a zeroed block never passes), repeated from the block's start over
# its first NMMPY_PATTERN_EDGE bytes and, restarted, over its last NMMPY_PATTERN_EDGE
# (the whole block when it is at most twice that). A block is only read once the
# allocator says it is live with at least the size the caller claims, so a stale or
# bogus address is never dereferenced by a check (its free reports what is wrong).
RAW_TYPES = """
typedef struct nmmpy_raw {
    nmm_heap_t *heap;        /* NULL once the Heap is closed */
    nmm_site_t site;         /* every allocation is attributed to it */
    uint64_t pattern_errors; /* damaged patterns found by free_pattern/realloc_pattern */
} nmmpy_raw_t;
"""

PATTERN_SHIMS = """
#define NMMPY_PATTERN_EDGE 16
#define NMMPY_PATTERN_BAD 0x100
#define NMMPY_HEAP_CLOSED 0x200
#define NMMPY_GOLDEN 0x9E3779B97F4A7C15ull

/* Write (put) or compare the word's bytes repeated from b over n bytes. */
static int nmmpy_edge(unsigned char *b, size_t n, const unsigned char w[8], int put)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if (put)
            memcpy(b + i, w, 8);
        else if (memcmp(b + i, w, 8) != 0)
            return 0;
    }
    for (; i < n; i++) {
        if (put)
            b[i] = w[i & 7];
        else if (b[i] != w[i & 7])
            return 0;
    }
    return 1;
}

static int nmmpy_pattern(unsigned char *b, size_t n, uint64_t key, int put)
{
    uint64_t word = (key + 1) * NMMPY_GOLDEN;
    unsigned char w[8];
    for (int i = 0; i < 8; i++)
        w[i] = (unsigned char)(word >> (8 * i));
    if (n <= 2 * NMMPY_PATTERN_EDGE)
        return nmmpy_edge(b, n, w, put);
    return nmmpy_edge(b, NMMPY_PATTERN_EDGE, w, put) &
           nmmpy_edge(b + n - NMMPY_PATTERN_EDGE, NMMPY_PATTERN_EDGE, w, put);
}

static int nmmpy_is_live(nmm_heap_t *h, uintptr_t p, size_t n)
{
    return p && nmm_usable_size(h, (const void *)p) >= n;
}

/* Atomic: cffi releases the GIL, so threads may share a handle. */
static void nmmpy_count_damage(nmmpy_raw_t *r)
{
    __atomic_fetch_add(&r->pattern_errors, 1, __ATOMIC_RELAXED);
}
"""

# The calls Python binds (_shim_cdef turns their signatures into the cdef).
RAW_CALLS = """
static uintptr_t nmmpy_raw_alloc(nmmpy_raw_t *r, size_t n)
{ return r->heap ? (uintptr_t)nmm_alloc(r->heap, n, r->site) : 0; }
static uintptr_t nmmpy_raw_alloc_pattern(nmmpy_raw_t *r, size_t n, uint64_t key)
{
    unsigned char *p = r->heap ? nmm_alloc(r->heap, n, r->site) : NULL;
    if (p)
        nmmpy_pattern(p, n, key, 1);
    return (uintptr_t)p;
}
static int nmmpy_raw_free(nmmpy_raw_t *r, uintptr_t p)
{ return r->heap ? (int)nmm_free(r->heap, (void *)p, r->site) : NMMPY_HEAP_CLOSED; }
static int nmmpy_raw_free_pattern(nmmpy_raw_t *r, uintptr_t p, size_t n, uint64_t key)
{
    if (!r->heap)
        return NMMPY_HEAP_CLOSED;
    int bad = nmmpy_is_live(r->heap, p, n) && !nmmpy_pattern((unsigned char *)p, n, key, 0);
    if (bad)
        nmmpy_count_damage(r);
    return (int)nmm_free(r->heap, (void *)p, r->site) | (bad ? NMMPY_PATTERN_BAD : 0);
}
static uintptr_t nmmpy_raw_realloc(nmmpy_raw_t *r, uintptr_t p, size_t n)
{ return r->heap ? (uintptr_t)nmm_realloc(r->heap, (void *)p, n, r->site) : 0; }
static uintptr_t nmmpy_raw_realloc_pattern(nmmpy_raw_t *r, uintptr_t p, size_t was, size_t n,
                                           uint64_t was_key, uint64_t key)
{
    if (!r->heap)
        return 0;
    /* the whole old pattern before the call; after it, the head both sizes keep */
    int bad = nmmpy_is_live(r->heap, p, was) &&
              !nmmpy_pattern((unsigned char *)p, was, was_key, 0);
    unsigned char *q = nmm_realloc(r->heap, (void *)p, n, r->site);
    if (q) {
        size_t kept = was < n ? was : n;
        if (kept > NMMPY_PATTERN_EDGE)
            kept = NMMPY_PATTERN_EDGE;
        bad = bad || !nmmpy_pattern(q, kept, was_key, 0);
        nmmpy_pattern(q, n, key, 1);
    }
    if (bad)
        nmmpy_count_damage(r);
    return (uintptr_t)q;
}
static int nmmpy_raw_check_pattern(nmmpy_raw_t *r, uintptr_t p, size_t n, uint64_t key)
{ return r->heap && nmmpy_is_live(r->heap, p, n) && nmmpy_pattern((unsigned char *)p, n, key, 0); }
"""


def _shim_cdef() -> str:
    """The cdef of the shims: the raw handle's type, the pattern constants, and the
    prototype of every ``static`` function of BINDING_SHIMS and RAW_CALLS (its
    signature, from ``static`` at the start of a line to the ``{`` of its body)."""
    protos = [
        " ".join(sig.split()) + ";"
        for sig in re.findall(r"^static\s+([^;{}]*?)\s*\{", BINDING_SHIMS + RAW_CALLS, re.M)
    ]
    constants = [f"#define {name} ..." for name in
                 ("NMMPY_PATTERN_EDGE", "NMMPY_PATTERN_BAD", "NMMPY_HEAP_CLOSED")]
    return "\n".join([RAW_TYPES, *constants, *protos])


def make_ffibuilder(flavor: Flavor = FLAVORS["release"]) -> FFI:
    """The cffi builder for a flavor (API mode, out of line)."""
    builder = FFI()
    builder.cdef(header_cdef() + "\n" + _shim_cdef())
    builder.set_source(
        flavor.module,
        '#include <string.h>\n#include "nmm.h"\n'
        + BINDING_SHIMS + RAW_TYPES + PATTERN_SHIMS + RAW_CALLS,
        sources=[_rel(p) for p in allocator_sources(shim=False)],
        include_dirs=[_rel(INCLUDE_DIR), _rel(SRC_DIR)],
        define_macros=[(d, "1") for d in flavor.defines],
        extra_compile_args=CFLAGS,
        libraries=LIBRARIES,
    )
    return builder


ffibuilder = make_ffibuilder()
#: the chaos flavor's extension (allocator._nmm_chaos_cffi), built by the same install
chaos_ffibuilder = make_ffibuilder(FLAVORS["chaos"])


# ------------------------------------------------------------------ native artifacts


class BuildError(RuntimeError):
    """A native compile or link step failed; gcc's message was already printed."""


def _run(cmd: list[str]) -> None:
    print(" ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.stdout:
        print(proc.stdout, end="", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        raise BuildError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout}")


def _compile_all(sources: list[Path], obj_dir: Path, flavor: Flavor, jobs: int) -> list[Path]:
    """Compile sources to objects, skipping objects newer than their source and
    every header (a header change rebuilds everything: simple and safe)."""
    obj_dir.mkdir(parents=True, exist_ok=True)
    headers = (
        list(INCLUDE_DIR.glob("*.h")) + list(SRC_DIR.glob("*.h")) + list(DRIVER_DIR.glob("*.h"))
    )
    newest_header = max((h.stat().st_mtime for h in headers), default=0.0)
    flags = (
        CFLAGS + [f"-D{d}" for d in flavor.defines] + ["-I", str(INCLUDE_DIR), "-I", str(SRC_DIR)]
    )
    todo: list[list[str]] = []
    objects: list[Path] = []
    for src in sources:
        tag = "drv_" if src.parent == DRIVER_DIR else ""
        obj = obj_dir / f"{tag}{src.stem}.o"
        objects.append(obj)
        if obj.exists() and obj.stat().st_mtime >= max(src.stat().st_mtime, newest_header):
            continue
        todo.append(["gcc", *flags, "-c", str(src), "-o", str(obj)])
    errors: list[BuildError] = []

    def one(cmd: list[str]) -> None:
        try:
            _run(cmd)
        except BuildError as exc:
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    if errors:
        raise errors[0]
    return objects


def _atomic_link(cmd_without_output: list[str], target: Path) -> None:
    """Link to a temporary name and rename, so a running process that has the old
    library mapped is never handed a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    _run([*cmd_without_output, "-o", str(tmp)])
    os.replace(tmp, target)


def build_native(
    alloc_out: Path | None = None,
    harness_out: Path | None = None,
    flavor_name: str = "release",
    build_dir: Path | None = None,
    jobs: int = 2,
) -> list[Path]:
    """Build libnmm.so, libnmm.a, libnmm_preload.so and nmm-driver for a flavor.

    Returns the artifacts built. The driver is skipped (not an error) while
    harness/native/ has no C sources.
    """
    flavor = FLAVORS[flavor_name]
    alloc_out = alloc_out or ALLOCATOR / "_native"
    harness_out = harness_out or ROOT / "harness" / "_native"
    build_dir = (build_dir or ROOT / "build" / "native") / flavor.name
    sfx = flavor.suffix

    lib_objs = _compile_all(allocator_sources(shim=False), build_dir, flavor, jobs)
    shim_objs = _compile_all(
        [p for p in allocator_sources(shim=True) if is_shim(p)], build_dir, flavor, jobs
    )
    link_libs = [f"-l{lib}" for lib in LIBRARIES]
    built: list[Path] = []

    so = alloc_out / f"libnmm{sfx}.so"
    _atomic_link(
        [
            "gcc",
            "-shared",
            "-pthread",
            f"-Wl,-soname,libnmm{sfx}.so",
            *map(str, lib_objs),
            *link_libs,
        ],
        so,
    )
    built.append(so)

    archive = alloc_out / f"libnmm{sfx}.a"
    tmp = archive.with_name(archive.name + ".tmp")
    tmp.unlink(missing_ok=True)
    _run(["ar", "rcs", str(tmp), *map(str, lib_objs)])
    os.replace(tmp, archive)
    built.append(archive)

    preload = alloc_out / f"libnmm{sfx}_preload.so"
    _atomic_link(
        ["gcc", "-shared", "-pthread", *map(str, lib_objs + shim_objs), *PRELOAD_WRAPS, *link_libs],
        preload,
    )
    built.append(preload)

    drv_sources = driver_sources()
    if drv_sources:
        drv_objs = _compile_all(drv_sources, build_dir, flavor, jobs)
        driver = harness_out / f"nmm-driver{sfx}"
        _atomic_link(["gcc", "-pthread", *map(str, drv_objs + lib_objs), *link_libs], driver)
        built.append(driver)
    else:
        print(f"nmm: no C sources in {DRIVER_DIR}; nmm-driver not built", file=sys.stderr)

    for path in (so, preload):
        _warn_on_extra_exports(path, preload=path == preload)
    return built


# The preload library defines memcpy, memmove and memset (copy_shim.c, checked);
# NMM's own calls of them are linked to copy_shim.c's __wrap_* routines instead,
# which go straight to the C library's.
PRELOAD_WRAPS = [f"-Wl,--wrap={name}" for name in ("memcpy", "memmove", "memset")]

# The checked bulk copies of copy_shim.c and their _FORTIFY_SOURCE forms.
COPY_FAMILY = frozenset(
    name
    for base in ("memcpy", "memmove", "memset", "strcpy", "strncpy", "strcat", "stpcpy")
    for name in (base, f"__{base}_chk")
)

# Symbols the preload library may export besides nmm_*.
MALLOC_FAMILY = frozenset(
    {
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
        "cfree",
        "__libc_malloc",
        "__libc_free",
        "__libc_calloc",
        "__libc_realloc",
        "__libc_memalign",
        "__libc_valloc",
        "__libc_pvalloc",
        "__libc_posix_memalign",
    }
)

# C++'s replaceable allocation functions (new_shim.c), by their Itanium ABI names:
# new / new[] (plain, nothrow, aligned, aligned nothrow) and delete / delete[]
# (plain, nothrow, sized, aligned, aligned nothrow, sized aligned).
CXX_OPERATORS = frozenset(
    f"_Z{op}{args}"
    for op in ("nw", "na")
    for args in ("m", "mRKSt9nothrow_t", "mSt11align_val_t", "mSt11align_val_tRKSt9nothrow_t")
) | frozenset(
    f"_Z{op}{args}"
    for op in ("dl", "da")
    for args in (
        "Pv",
        "PvRKSt9nothrow_t",
        "Pvm",
        "PvSt11align_val_t",
        "PvSt11align_val_tRKSt9nothrow_t",
        "PvmSt11align_val_t",
    )
)


def exported_symbols(path: Path) -> set[str]:
    """Dynamic symbols a shared library defines (nm -D --defined-only)."""
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True
    ).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "TtWwDdBbRrVvi":
            names.add(parts[2].split("@")[0])
    return names - {"_init", "_fini", "_edata", "_end", "__bss_start"}


def unexpected_exports(path: Path, *, preload: bool) -> set[str]:
    """Exported symbols outside the contract (nmm_*, plus the malloc family)."""
    allowed = MALLOC_FAMILY | CXX_OPERATORS | COPY_FAMILY if preload else frozenset()
    return {s for s in exported_symbols(path) if not s.startswith("nmm_") and s not in allowed}


def _warn_on_extra_exports(path: Path, *, preload: bool) -> None:
    if shutil.which("nm") is None:
        return
    extra = unexpected_exports(path, preload=preload)
    if extra:
        print(
            f"nmm: warning: {path.name} exports non-nmm symbols: {sorted(extra)}", file=sys.stderr
        )


# ------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    """``python allocator/build.py native [--flavor F]`` and ``cdef`` (debugging)."""
    parser = argparse.ArgumentParser(prog="allocator/build.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    native = sub.add_parser("native", help="build libnmm.so/.a, the preload library and nmm-driver")
    native.add_argument("--flavor", choices=sorted(FLAVORS), default="release")
    native.add_argument("-j", "--jobs", type=int, default=2)
    sub.add_parser("cdef", help="print the cdef derived from nmm.h")
    args = parser.parse_args(argv)
    if args.cmd == "cdef":
        print(header_cdef())
        return 0
    try:
        for path in build_native(flavor_name=args.flavor, jobs=args.jobs):
            print(f"built {path.relative_to(ROOT)}")
    except BuildError as exc:
        print(f"nmm: native build failed: {exc.args[0].splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
