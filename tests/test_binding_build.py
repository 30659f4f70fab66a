"""allocator/build.py: the cdef derived from nmm.h, the stats field list, flavors."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nmm_build_under_test", ROOT / "allocator/build.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cdef_declares_every_public_function(build: ModuleType) -> None:
    header = (ROOT / "allocator/include/nmm.h").read_text()
    declared = set(re.findall(r"NMM_API\s+[^;(]*?\b(nmm_\w+)\s*\(", header))
    ffi = FFI()
    ffi.cdef(build.header_cdef())
    cdef_text = build.header_cdef()
    assert declared and all(f"{name}(" in cdef_text for name in declared)
    fields = [name for name, _ in ffi.typeof("nmm_stats_t").fields]
    assert fields[:2] == ["size", "version"]
    assert fields[2 : 2 + len(build.stats_fields())] == [n for n, _ in build.stats_fields()]


def test_stats_fields_parse_the_x_macro(build: ModuleType) -> None:
    text = (
        "#define NMM_STATS_FIELDS(X) \\\n"
        '    X(alpha, "first") \\\n'
        '    X(beta, "second, with \\"quotes\\"")\n'
        "int after;\n"
    )
    assert build.stats_fields(text) == [("alpha", "first"), ("beta", 'second, with \\"quotes\\"')]
    with pytest.raises(RuntimeError, match="NMM_STATS_FIELDS"):
        build.stats_fields("int nothing_here;\n")


def test_flavors_are_data(build: ModuleType) -> None:
    assert build.FLAVORS["release"].defines == ()
    assert build.FLAVORS["chaos"].defines == ("NMM_CHAOS",)
    library = {p.name for p in build.allocator_sources(shim=False)}
    preload = {p.name for p in build.allocator_sources(shim=True)}
    assert {"malloc_shim.c", "new_shim.c"} <= preload - library
    assert not any(name.endswith(build.SHIM_SUFFIX) for name in library)
