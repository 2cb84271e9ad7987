"""Durations written the Go way (``"72h"``, ``"30s"``, ``"500ms"``, ``"1h30m"``), plus days.

The Collector's options (``ttl: 72h``, ``timeout: 5s``) are Go ``time.Duration`` strings, so the
exporter's environment variables take the same text; the CLI reads its windows with the same
function. Units: ``ns``, ``us`` (``µs``), ``ms``, ``s``, ``m``, ``h`` as in Go's
``time.ParseDuration``, and ``d`` (24 h) and ``w`` (7 d), which Go lacks but retention periods
want (``OTEL_EXPORTER_CLICKHOUSE_TTL=90d``).
"""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN, as Go accepts it
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
# One "<number><unit>" term; a duration is one or more of them, e.g. "1h30m" or "1.5h".
_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration: ``"30s"`` → 30.0, ``"1h30m"`` → 5400.0, ``"90d"`` → 7776000.0.

    A sign may lead (``"-5m"``); ``"0"`` needs no unit. Raises ``ValueError`` with a message
    naming the text and the accepted forms.
    """
    source = text
    text = text.strip()
    sign = 1.0
    if text[:1] in ("+", "-"):
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f"{source!r} is not a duration: expected a number and a unit, like 30s, 500ms, 72h or 90d")
    total = 0.0
    position = 0
    for match in _TERM.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        hint = " (add a unit, e.g. 5s)" if text.replace(".", "", 1).isdigit() else ""
        raise ValueError(
            f"{source!r} is not a duration{hint}: expected a number and a unit (ns, us, ms, s, m, h, d, w), "
            "like 30s, 500ms, 1h30m or 90d"
        )
    return sign * total


def format_duration(seconds: float) -> str:
    """The shortest Go-style text for whole seconds and up: 5400 → ``"1h30m"``; below a second, ms."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        milliseconds = seconds * 1000
        text = f"{milliseconds:.3f}".rstrip("0").rstrip(".")
        return f"{sign}{text}ms"
    whole = int(seconds)
    fraction = seconds - whole
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    if whole or fraction or not parts:
        text = f"{whole + fraction:.3f}".rstrip("0").rstrip(".")
        parts.append(f"{text}s")
    return sign + "".join(parts)
