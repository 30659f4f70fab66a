"""The harness package's public surface resolves, and loading the pytest plugin (which
every pytest process of the environment does) imports none of the engine."""

from __future__ import annotations

import subprocess
import sys

import harness


def test_every_public_name_resolves_lazily():
    assert sorted(harness.__all__) == sorted(harness._SOURCES)
    for name in harness.__all__:
        assert getattr(harness, name) is not None, name
    assert set(harness.__all__) <= set(dir(harness))


def test_loading_the_pytest_plugin_imports_no_engine():
    code = ("import sys, harness.pytest_plugin; "
            "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'harness.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['harness.pytest_plugin']"
