"""Reading a server's /metrics as Prometheus parses it (never by matching lines of text)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(url: str) -> list[Sample]:
    """Every sample of ``url``/metrics, on a fresh connection."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric(url: str, name: str, default: float | None = None, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``.

    With none, ``default`` — for a labelled counter whose series appears at its first count — or,
    without a default, an ``AssertionError``: a misspelt name must not read as zero.
    """
    values = [sample.value for sample in scrape(url)
              if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())]
    if not values:
        assert default is not None, f"no {name}{labels or ''} in {url}/metrics"
        return default
    return float(sum(values))
