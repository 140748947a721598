"""The colour of every series of a panel, chosen the way Grafana chooses it from the panel's JSON.

The dashboards give colours a meaning through field overrides (``byRegexp`` on the series name →
green shades for ok, orange for 4xx, red for errors; see ``MEANING`` in grafana/build.py), so the
render must read them rather than hand out its palette in legend order — that drew errors green.
Series without a meaning get a palette colour no other series of the panel has; a panel with more
series than the palette gets generated colours, never a repeat. The palette leaves out red, green
and orange so that a colour without meaning cannot be mistaken for one.
"""

from __future__ import annotations

import colorsys
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]

NAMED = {"red": "#f2495c", "green": "#73bf69", "orange": "#ff9830", "yellow": "#fade2a", "blue": "#5794f2",
         "purple": "#b877d9", "text": "#ccccdc"}
"""Grafana's named colours (dark theme), as the dashboards' fixedColor and iconColor use them."""

PALETTE = ("#5794f2", "#f2cc0c", "#b877d9", "#8ab8ff", "#705da0", "#447ebc", "#ca95e5", "#1f60c4")
"""Grafana's classic palette without its reds, greens and oranges (those carry meaning here)."""

SHADE_STEP = 0.16  # lightness between neighbouring shades, narrowed when many series share a colour
LIGHTNESS = (0.3, 0.85)  # shades stay visible on the dark panel


def hex_colour(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgb)


def rgb(colour: str) -> tuple[float, float, float]:
    code = NAMED.get(colour, colour).lstrip("#")
    red, green, blue = (int(code[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return red, green, blue


def resolve(colour: str) -> str:
    """A named Grafana colour or a hex code → the hex code."""
    return hex_colour(rgb(colour))


def matches(pattern: str, name: str) -> bool:
    """Grafana's byRegexp: ``/body/flags`` searches the name; a plain pattern must match all of it."""
    if len(pattern) > 2 and pattern.startswith("/") and pattern.rfind("/") > 0:
        cut = pattern.rfind("/")
        flags = re.IGNORECASE if "i" in pattern[cut + 1:] else 0
        return re.search(pattern[1:cut], name, flags) is not None
    return re.fullmatch(pattern, name) is not None


def shade(colour: str, index: int, count: int) -> str:
    """The ``index``-th of ``count`` distinct shades of ``colour``: same hue, lightness spread
    evenly around the colour's own (shifted as a block to stay inside :data:`LIGHTNESS`)."""
    hue, lightness, saturation = colorsys.rgb_to_hls(*rgb(colour))
    if count == 1:
        return resolve(colour)
    step = min(SHADE_STEP, (LIGHTNESS[1] - LIGHTNESS[0]) / (count - 1))
    span = step * (count - 1)
    centre = min(max(lightness, LIGHTNESS[0] + span / 2), LIGHTNESS[1] - span / 2)
    return hex_colour(colorsys.hls_to_rgb(hue, centre - span / 2 + index * step, saturation))


def generated(index: int) -> str:
    """Colours past the palette: hues from cyan to magenta (never red, green or orange) a golden
    angle apart, so no two indexes give the same one."""
    hue = 0.45 + ((index * 0.618034) % 1.0) * 0.47
    lightness = (0.55, 0.7, 0.4)[index % 3]
    return hex_colour(colorsys.hls_to_rgb(hue, lightness, 0.75))


def colour_setting(field_config: Json, name: str) -> Json:
    """The ``color`` a series ends up with: the panel default, then every matching override in order."""
    setting: Json = field_config.get("defaults", {}).get("color", {"mode": "palette-classic"})
    for override in field_config.get("overrides", []):
        matcher = override.get("matcher", {})
        if matcher.get("id") != "byRegexp" or not matches(matcher.get("options", ""), name):
            continue
        for prop in override.get("properties", []):
            if prop.get("id") == "color":
                setting = prop["value"]
    return setting


def series_colours(field_config: Json, names: Sequence[str]) -> list[str]:
    """One colour per series name, in order: fixed colours as given, shades split among the series
    that share them, the rest the first palette (or generated) colours nobody in the panel has."""
    settings = [colour_setting(field_config, name) for name in names]
    keys = [(s["mode"], s.get("fixedColor", "")) if s.get("mode") in {"fixed", "shades"} else None for s in settings]
    sizes = Counter(keys)
    seen: Counter[tuple[str, str] | None] = Counter()
    chosen: list[str | None] = []
    for key in keys:
        if key is None:
            chosen.append(None)
        elif key[0] == "fixed":
            chosen.append(resolve(key[1]))
        else:
            chosen.append(shade(key[1], seen[key], sizes[key]))
            seen[key] += 1
    spare = (colour for colour in (*PALETTE, *(generated(k) for k in range(10_000))) if colour not in chosen)
    return [colour if colour is not None else next(spare) for colour in chosen]
