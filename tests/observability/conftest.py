"""Fixtures for the observability tests: the Grafana dashboards as built, and the panel queries
they contain."""

from __future__ import annotations

import json
from typing import Any

import pytest

from grafana.panels import DASHBOARDS, iter_panels


def load_dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards: file name → parsed JSON."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file, panel, target) for every query of every panel."""
    return [(name, panel, target)
            for name, dashboard in load_dashboards().items()
            for panel in iter_panels(dashboard)
            for target in panel.get("targets", [])]


@pytest.fixture(scope="session")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


@pytest.fixture(scope="session")
def panels(dashboards: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(dashboard file, panel) for every panel of every dashboard."""
    return [(name, panel) for name, dashboard in dashboards.items() for panel in iter_panels(dashboard)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test asking for ``panel_target`` runs once per panel query: (dashboard file, panel, target)."""
    if "panel_target" in metafunc.fixturenames:
        targets = panel_targets()
        ids = [f"{name.removesuffix('.json')}:{panel['id']}{target['refId']}" for name, panel, target in targets]
        metafunc.parametrize("panel_target", targets, ids=ids)
