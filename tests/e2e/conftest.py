"""Fixtures for the end-to-end tests: the root conftest's helpers, without ``import conftest``.

No test directory is a package, so every conftest.py is a top-level module named ``conftest`` and
importing it by name is ambiguous; the module pytest registered from tests/conftest.py is not.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


@pytest.fixture(scope="session")
def harness(pytestconfig: pytest.Config) -> ModuleType:
    """tests/conftest.py as loaded by pytest: ``require_tool``, ``start_server``, ``stop_process``."""
    for plugin in pytestconfig.pluginmanager.get_plugins():
        if isinstance(plugin, ModuleType) and Path(getattr(plugin, "__file__", "") or "").resolve() == ROOT_CONFTEST:
            return plugin
    raise RuntimeError(f"{ROOT_CONFTEST} is not loaded")
