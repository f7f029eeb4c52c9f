"""fleet_core never imports a UI toolkit (checked in a fresh interpreter)."""

import pkgutil
import subprocess
import sys

import fleet_core


def test_fleet_core_never_loads_textual() -> None:
    modules = [m.name for m in pkgutil.walk_packages(fleet_core.__path__, "fleet_core.")]
    modules = [m for m in modules if m != "fleet_core.__main__"]
    assert "fleet_core.registry" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
