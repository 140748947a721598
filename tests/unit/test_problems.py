"""Every problem type the code raises is registered in app/api/problems.py, and docs/problems.md
documents exactly the registered ones, with the same status."""

from __future__ import annotations

import re
from pathlib import Path

from app.api.problems import KINDS

REPO = Path(__file__).parents[2]


def raised_slugs() -> set[str]:
    found: set[str] = set()
    for path in [*REPO.glob("app/**/*.py"), REPO / "deploy/haproxy/errors/503.http"]:
        text = path.read_text()
        found |= set(re.findall(r'Problem\(\d+, f?"([a-z0-9-]+)"', text))
        found |= set(re.findall(r'"type":\s*"/problems/([a-z0-9-]+)"', text))
    return found


def test_every_raised_type_is_registered() -> None:
    raised = raised_slugs()
    assert len(raised) > 15
    assert raised <= KINDS.keys(), raised - KINDS.keys()


def test_docs_list_every_registered_type_with_its_status() -> None:
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (\d{3}) \|", (REPO / "docs/problems.md").read_text(), re.M))
    assert rows.keys() == KINDS.keys()
    assert all(int(rows[slug]) == kind.status for slug, kind in KINDS.items())
