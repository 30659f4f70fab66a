"""setuptools glue: the cffi extension plus NMM's native artifacts.

Everything about sources, flags and flavors lives in allocator/build.py; this
file only hooks it into ``build_ext`` so ``pip install -e .`` (and a wheel build)
also produces libnmm.so/.a, libnmm_preload.so and harness/_native/nmm-driver, and the
same again from the chaos flavor (``*_chaos``: yield points and mutants).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nmm_build", ROOT / "allocator" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildExtWithNative(build_ext):
    """build_ext that also builds the native libraries and the driver.

    In place (editable installs, ``build_ext --inplace``) the artifacts go into
    the source tree; otherwise into build_lib, so they land in the wheel.
    """

    def copy_file(
        self, infile: str, outfile: str, *args: object, **kwargs: object
    ) -> tuple[str, bool]:  # type: ignore[override]
        """Copy the built extension into the source tree atomically (write a
        temporary file, then rename), so a process that has the old module
        mapped is never handed a half-written file (the editable tree is shared)."""
        if not str(outfile).endswith(".so"):
            return super().copy_file(infile, outfile, *args, **kwargs)  # type: ignore[arg-type]
        tmp = f"{outfile}.tmp{os.getpid()}"
        shutil.copy2(infile, tmp)
        os.replace(tmp, outfile)
        return (outfile, True)

    def run(self) -> None:
        super().run()
        build = _load_build_module()
        inplace = self.inplace or getattr(self, "editable_mode", False)
        base = ROOT if inplace else Path(self.build_lib)
        try:
            for flavor in build.FLAVORS:  # release, then chaos (design.md "Chaos build")
                build.build_native(
                    alloc_out=base / "allocator" / "_native",
                    harness_out=base / "harness" / "_native",
                    flavor_name=flavor,
                    build_dir=Path(self.build_temp) / "native",
                    jobs=2,
                )
        except build.BuildError as exc:
            raise SystemExit(f"nmm: native build failed:\n{exc}") from None


setup(
    cffi_modules=["allocator/build.py:ffibuilder", "allocator/build.py:chaos_ffibuilder"],
    cmdclass={"build_ext": BuildExtWithNative},
)
