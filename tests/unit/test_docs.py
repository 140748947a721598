"""The docs name the tests that prove their claims (docs/reliability.md has a test per fault,
docs/device.md one per behaviour of reference §7): every test they name must exist, so a renamed or
deleted test cannot leave a claim standing on nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/reliability.md", "docs/device.md", "docs/deploy.md", "docs/observability.md"]
DEFINED = "\n".join(path.read_text() for path in (REPO / "tests").rglob("*.py"))


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_a_doc_names_exists(doc: str) -> None:
    text = (REPO / doc).read_text()
    missing = []
    for path, name in re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text):
        source = REPO / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"def {name}\b", source.read_text()):
            missing.append(f"{path}::{name}")
    for name in re.findall(r"`(test_\w+)`", text):
        if not re.search(rf"def {name}\b", DEFINED):
            missing.append(name)
    assert not missing, f"{doc} names tests that do not exist: {missing}"
