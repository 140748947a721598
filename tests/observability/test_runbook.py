"""docs/runbook.md against the alert rules: every alert's runbook_url is an absolute URL (Alertmanager
does not resolve relative ones) into docs/runbook.md whose anchor is a heading there, with the
anchors GitHub gives headings; every alert's section says what it means, how to confirm it and what
to do; and every link inside the runbook lands on one of its headings."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbook.md"
URL = "https://github.com/warpzip/warpzip/blob/main/docs/runbook.md#"
PARTS = ("**Meaning.**", "**Confirm.**", "**Act.**")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped (letters, digits,
    marks, spaces, hyphens and underscores stay), each space a hyphen."""
    text = heading.strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def headings(markdown: str) -> list[tuple[str, str]]:
    """(anchor, section text) for every heading outside fenced code; a repeated anchor gets -1, -2 …
    as on GitHub."""
    found: list[tuple[str, list[str]]] = []
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match is None:
            if found:
                found[-1][1].append(line)
            continue
        anchor = github_anchor(re.sub(r"[`*_]", "", match.group(2)))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.append((anchor if count == 0 else f"{anchor}-{count}", []))
    return [(anchor, "\n".join(lines)) for anchor, lines in found]


def alert_rules() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load((REPO / "grafana" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize(("heading", "anchor"), [
    ("WarpzipDeviceDown", "warpzipdevicedown"),
    ("Service level objectives", "service-level-objectives"),
    ("Runbook: warpzip alerts", "runbook-warpzip-alerts"),
    ("What's up? (p99, 0.25 s)", "whats-up-p99-025-s"),
    ("snake_case and kebab-case", "snake_case-and-kebab-case"),
])
def test_github_anchor(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


def test_repeated_headings_are_numbered() -> None:
    assert [a for a, _ in headings("# A\n## B\n```\n# not a heading\n```\n## B\n")] == ["a", "b", "b-1"]


def test_every_runbook_url_lands_on_a_heading() -> None:
    anchors = {anchor for anchor, _ in headings(RUNBOOK.read_text())}
    rules = alert_rules()
    assert len(rules) >= 12
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(URL), (rule["alert"], url)
        assert url.removeprefix(URL) in anchors, (rule["alert"], url, sorted(anchors))


def test_every_alert_has_its_own_section() -> None:
    sections = dict(headings(RUNBOOK.read_text()))
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].removeprefix(URL)
        assert anchor == rule["alert"].lower(), rule["alert"]  # one section per alert, under its name
        text = sections[anchor]
        positions = [text.find(part) for part in PARTS]
        assert -1 not in positions and positions == sorted(positions), (rule["alert"], positions)
        severity = rule["labels"]["severity"]
        assert f"**Meaning.** {severity.capitalize()}" in text, (rule["alert"], severity)


def test_links_inside_the_runbook_land_on_headings() -> None:
    text = RUNBOOK.read_text()
    anchors = {anchor for anchor, _ in headings(text)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) >= 5
    assert set(links) <= anchors, sorted(set(links) - anchors)
