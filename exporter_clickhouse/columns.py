"""Spans → one ClickHouse Native block, with the values the Collector's clickhouseexporter writes.

``encode_spans(spans)`` turns a batch of SDK spans into the bytes of one ``FORMAT Native`` block
for the 22 insert columns of ``otel_traces`` (``INSERT_COLUMNS``, in the Collector's order). The
same bytes go into the spool file and into the INSERT, so a replayed batch is byte-identical to
the first attempt (which is what lets ``insert_deduplication_token`` drop a second copy).

Values follow the Collector (``exporter_traces.go`` and pdata):

- ``Timestamp`` is the start time and ``Duration`` is end minus start, both in nanoseconds;
- trace and span ids are lowercase hex, ``ParentSpanId`` is ``''`` for a root span;
- ``SpanKind`` and ``StatusCode`` are pdata's ``String()`` names (``Client``, ``Error``, ...);
- every attribute value becomes text the way pdata's ``Value.AsString()`` writes it
  (see :func:`as_string`).

Why an encoder of our own: clickhouse-connect's column writers want one ``dict`` per Map row
and sample every column to size its blocks; for spans of 20 attributes that cost more than
everything else in the exporter. Here a batch is walked once into flat lists (all keys of all
spans in one list, all values in another, plus offsets), and each flat list is written with a
few C-level passes (``map``, ``b"".join``, ``struct.pack``). ``LowCardinality`` columns (span
names, attribute keys) are written as a dictionary plus one small index per row, as the table
stores them: half the bytes of plain strings, and nothing for the server to convert.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan

from llmtel.exporter_clickhouse.schema import TRACES_COLUMNS

# (column, ClickHouse type) in the Collector's insert order, with the table's types, so the
# server converts nothing: the schema module's list, which the DDL templates match.
INSERT_COLUMNS: tuple[tuple[str, str], ...] = TRACES_COLUMNS
INSERT_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in INSERT_COLUMNS)

# pdata's ptrace.SpanKind.String() and ptrace.StatusCode.String(), indexed by the Python SDK's
# enum values. The Python SDK has no "unspecified" kind: its INTERNAL (0) is exported as OTLP
# SPAN_KIND_INTERNAL, which pdata names "Internal"; "Unspecified" never comes from Python.
SPAN_KIND_NAMES: tuple[str, ...] = ("Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODE_NAMES: tuple[str, ...] = ("Unset", "Ok", "Error")


class EncodedBatch(NamedTuple):
    """One Native block: the insert payload and the spool file's body."""

    native: bytes
    rows: int


# --- attribute values as pdata's Value.AsString() writes them -------------------------------


def format_double(value: float) -> str:
    """A float as pdata's ``float64AsString`` writes it (Go's encoding/json number format).

    Shortest round-trip digits, positional notation unless ``|v| < 1e-6`` or ``|v| >= 1e21``,
    exponents without a leading zero (``1e-7``, ``1e+21``); ``1.0`` is ``"1"``. Python's
    ``repr`` gives the same digits, only with other cut-offs for the exponent form.
    (pdata/pcommon/value.go, ``float64AsString``.)
    """
    text = repr(value)
    if "e" not in text and "n" not in text:
        # repr is positional for 1e-4 <= |v| < 1e16, where Go is positional too; "n" is in
        # "inf" and "nan".
        return text[:-2] if text.endswith(".0") else text
    if value != value or value in (math.inf, -math.inf):
        # Go: fmt.Sprintf("json: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
        word = "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
        return f"json: unsupported value: {word}"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        # repr already uses the exponent form here; Go drops the leading zero of e-0X.
        mantissa, _, exponent = text.partition("e")
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        if sign == "+" and len(digits) < 2:
            digits = digits.rjust(2, "0")
        return f"{mantissa}e{sign}{digits}"
    # repr switches to the exponent form from 1e16 and below 1e-4; Go does not.
    return _positional(text)


def _positional(text: str) -> str:
    mantissa, _, exponent_text = text.partition("e")
    negative = mantissa.startswith("-")
    mantissa = mantissa.lstrip("-")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent_text)
    if point <= 0:
        body = "0." + "0" * -point + digits
    elif point >= len(digits):
        body = digits + "0" * (point - len(digits))
    else:
        body = digits[:point] + "." + digits[point:]
    if "." in body:
        body = body.rstrip("0").rstrip(".")
    return "-" + body if negative else body


def _json_string(text: str) -> str:
    # Go's encoding/json escapes <, > and & (HTML-safe) and U+2028/U+2029, and keeps other
    # non-ASCII characters as they are; Python's json escapes the rest the same way.
    quoted = json.dumps(text, ensure_ascii=False)
    if "<" in quoted or ">" in quoted or "&" in quoted or "\u2028" in quoted or "\u2029" in quoted:
        quoted = (
            quoted.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )
    return quoted


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return _json_string(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        if value != value or value in (math.inf, -math.inf):
            raise ValueError("json: unsupported value")
        return format_double(value)
    if isinstance(value, (bytes, bytearray)):
        return '"' + base64.b64encode(value).decode("ascii") + '"'
    if isinstance(value, Mapping):
        # Go marshals map keys sorted.
        items = sorted((str(key), item) for key, item in value.items())
        return "{" + ",".join(_json_string(key) + ":" + _json_value(item) for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json_value(item) for item in value) + "]"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _json_value(float(value))
    return _json_string(str(value))


def as_string(value: Any) -> str:
    """An attribute value as text, like pdata's ``Value.AsString()`` (pdata/pcommon/value.go).

    str as is; bool ``true``/``false``; int in decimal; float per :func:`format_double`; bytes
    in standard base64; sequences and mappings as compact JSON (Go's encoding/json: HTML-safe
    escapes, map keys sorted); ``None`` (an empty value) as ``""``. A sequence holding NaN or
    infinity cannot be marshalled in Go, where AsString then yields ``""``.
    """
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return format_double(value)
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return format_double(float(value))
    if isinstance(value, str):
        return str(value)
    try:
        return _json_value(value if isinstance(value, Mapping) else list(value))
    except ValueError:
        return ""
    except TypeError:
        return str(value)


class _ArrayTexts(dict):
    """Tuples of strings (``finish_reasons``, ``stop_sequences``) → JSON text, computed once.

    Only all-str tuples are cached: (True,) == (1,) as dict keys, and they are different text.
    """

    def __missing__(self, key: tuple) -> str:
        text = as_string(key)
        if len(self) < 4096:
            self[key] = text
        return text


_ARRAY_TEXTS = _ArrayTexts()


def _tuple_text(value: tuple) -> str:
    if value and all(type(item) is str for item in value):
        return _ARRAY_TEXTS[value]
    return as_string(value)


# type → AsString for the value types attributes hold; anything else goes through as_string.
_TEXT_OF: dict[type, Any] = {
    int: int.__repr__,
    float: format_double,
    bool: lambda value: "true" if value else "false",
    tuple: _tuple_text,
}


def _stringify(values: list) -> list:
    """``values`` with each non-str item replaced by its AsString text."""
    text_of = _TEXT_OF.get
    return [
        value if value.__class__ is str else text_of(value.__class__, as_string)(value)
        for value in values
    ]


# --- Native encoding -----------------------------------------------------------------------


def _leb128(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _LengthPrefixes(dict):
    """n → the LEB128 bytes of n: the length prefix of a Native String."""

    def __missing__(self, number: int) -> bytes:
        prefix = _leb128(number)
        if number < 1 << 16:
            self[number] = prefix
        return prefix


_PREFIXES = _LengthPrefixes()


class _EncodedStrings(dict):
    """Repeating strings (attribute keys, span and service names) → their Native bytes.

    Bounded: attribute keys are few in practice, but a key made of ids would grow it forever.
    """

    def __missing__(self, text: str) -> bytes:
        data = _encode_text(text)
        encoded = _PREFIXES[len(data)] + data
        if len(self) >= 65536:
            self.clear()
        self[text] = encoded
        return encoded


_REPEATING = _EncodedStrings()


def _encode_text(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (from a broken decode somewhere upstream) cannot be UTF-8; Go
        # would have replaced invalid UTF-8 with U+FFFD when it marshalled the value.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def _string_column(values: Sequence[str], out: list[bytes]) -> None:
    """Append a Native ``String`` column: per value a LEB128 length, then the UTF-8 bytes."""
    try:
        encoded = list(map(str.encode, values))
    except UnicodeEncodeError:
        encoded = [_encode_text(value) for value in values]
    parts: list[bytes] = [b""] * (2 * len(encoded))
    parts[0::2] = map(_PREFIXES.__getitem__, map(len, encoded))
    parts[1::2] = encoded
    out.append(b"".join(parts))


def _repeating_string_column(values: Iterable[str], out: list[bytes]) -> None:
    """A ``String`` column whose values repeat a lot: each distinct value is encoded once."""
    out.append(b"".join(map(_REPEATING.__getitem__, values)))


class _Positions(dict):
    """str → its position in a LowCardinality dictionary, numbered in order of first use."""

    def __missing__(self, text: str) -> int:
        position = self[text] = len(self)
        return position


# LowCardinality serialization (ClickHouse SerializationLowCardinality): the column starts with
# the key version (1, "shared dictionaries with additional keys"); each non-empty chunk is a
# UInt64 of flags (index width | HasAdditionalKeys | NeedUpdateDictionary), the dictionary as a
# nested String column, then the row count and one unsigned index per row.
_LOW_CARDINALITY_VERSION = struct.pack("<Q", 1)
_HAS_ADDITIONAL_KEYS = 1 << 9
_NEED_UPDATE_DICTIONARY = 1 << 10
_INDEX_FORMATS = ((0, 1 << 8, "B"), (1, 1 << 16, "H"), (2, 1 << 32, "I"), (3, 1 << 64, "Q"))


def _low_cardinality_column(values: Sequence[str], out: list[bytes]) -> None:
    """The data of a ``LowCardinality(String)`` column (its version prefix is written apart)."""
    if not values:
        return
    positions = _Positions()
    indexes = list(map(positions.__getitem__, values))
    size = len(positions)
    width, code = next((width, code) for width, bound, code in _INDEX_FORMATS if size < bound)
    out.append(struct.pack("<QQ", width | _HAS_ADDITIONAL_KEYS | _NEED_UPDATE_DICTIONARY, size))
    _repeating_string_column(positions, out)
    out.append(struct.pack("<Q", len(indexes)))
    out.append(bytes(indexes) if code == "B" else array(code, indexes).tobytes())


def _offsets(counts: Sequence[int], out: list[bytes]) -> None:
    """Array offsets: UInt64 running totals of the per-row lengths."""
    total = 0
    running = []
    append = running.append
    for count in counts:
        total += count
        append(total)
    out.append(struct.pack(f"<{len(running)}Q", *running))


def _column_header(name: str, type_name: str, out: list[bytes]) -> None:
    for text in (name, type_name):
        data = text.encode()
        out.append(_PREFIXES[len(data)] + data)


# --- spans → flat column buffers -----------------------------------------------------------


def _raw_mapping(attributes: Any) -> Mapping[str, Any]:
    """The plain dict behind SDK attributes, when there is one.

    ``ReadableSpan.attributes`` wraps a ``BoundedAttributes`` in a ``MappingProxyType``; its
    ``values()`` then run a Python-level ``__getitem__`` (with the Mapping mixin) per key,
    several times slower than reading the dict the SDK keeps inside. Any other mapping is
    used as it is.
    """
    inner = getattr(attributes, "_dict", None)
    if type(inner) is dict:
        return inner
    return attributes if attributes else {}


def _span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    # The SDK's ReadableSpan keeps the BoundedAttributes in _attributes; the public property
    # allocates a MappingProxyType around it on every read.
    raw = getattr(span, "_attributes", None)
    if raw is None and not hasattr(span, "_attributes"):
        raw = span.attributes
    return _raw_mapping(raw)


def _hex_trace_id(trace_id: int) -> str:
    # pdata's TraceID.String() is "" for the all-zero (invalid) id.
    return format(trace_id, "032x") if trace_id else ""


def _hex_span_id(span_id: int) -> str:
    return format(span_id, "016x") if span_id else ""


class _MapBuffer:
    """A Map(LowCardinality(String), String) column (or the maps in an Array of maps), flattened."""

    __slots__ = ("counts", "keys", "values")

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.keys: list[str] = []
        self.values: list[Any] = []

    def add(self, mapping: Mapping[str, Any]) -> None:
        self.counts.append(len(mapping))
        if mapping:
            self.keys.extend(mapping.keys())
            self.values.extend(mapping.values())

    def encode(self, out: list[bytes], *, repeating_values: bool = False) -> None:
        """Offsets, keys, values; the caller writes the LowCardinality version prefix first."""
        _offsets(self.counts, out)
        _low_cardinality_column(self.keys, out)
        values = _stringify(self.values)
        if repeating_values:
            _repeating_string_column(values, out)
        else:
            _string_column(values, out)


class _ResourceColumns(NamedTuple):
    service_name: str
    attributes: dict[str, str]


def _resource_columns(resource: Any) -> _ResourceColumns:
    attributes = {key: as_string(value) for key, value in _raw_mapping(resource.attributes).items()}
    service_name = resource.attributes.get("service.name") if resource.attributes else None
    # The Collector reads service.name with Value.Str(), which is "" for a non-string value.
    return _ResourceColumns(service_name if type(service_name) is str else "", attributes)


def encode_spans(spans: Sequence[ReadableSpan]) -> EncodedBatch:
    """One Native block holding ``spans`` as ``otel_traces`` rows (columns: ``INSERT_COLUMNS``)."""
    rows = len(spans)
    timestamps: list[int] = []
    trace_ids: list[str] = []
    span_ids: list[str] = []
    parent_ids: list[str] = []
    trace_states: list[str] = []
    names: list[str] = []
    kinds: list[str] = []
    service_names: list[str] = []
    resource_maps = _MapBuffer()
    scope_names: list[str] = []
    scope_versions: list[str] = []
    span_maps = _MapBuffer()
    durations: list[int] = []
    status_codes: list[str] = []
    status_messages: list[str] = []
    event_counts: list[int] = []
    event_timestamps: list[int] = []
    event_names: list[str] = []
    event_maps = _MapBuffer()
    link_counts: list[int] = []
    link_trace_ids: list[str] = []
    link_span_ids: list[str] = []
    link_trace_states: list[str] = []
    link_maps = _MapBuffer()

    resources: dict[int, _ResourceColumns] = {}
    trace_state_texts: dict[int, str] = {}
    kind_names = SPAN_KIND_NAMES
    status_names = STATUS_CODE_NAMES
    span_counts, span_keys, span_values = span_maps.counts, span_maps.keys, span_maps.values

    # The hot loop: one pass per span, appending to flat lists, nothing allocated per span but
    # the hex ids. Enum members are read through ``_value_`` (the documented sunder attribute):
    # ``.value`` is a Python-level descriptor call.
    for span in spans:
        context = span.context
        start = span.start_time or 0
        end = span.end_time
        timestamps.append(start)
        trace_id = context.trace_id
        trace_ids.append(format(trace_id, "032x") if trace_id else "")  # pdata: "" for the zero id
        span_id = context.span_id
        span_ids.append(format(span_id, "016x") if span_id else "")
        parent = span.parent
        parent_ids.append(format(parent.span_id, "016x") if parent is not None and parent.span_id else "")
        state = context.trace_state
        text = trace_state_texts.get(id(state))
        if text is None:
            text = trace_state_texts[id(state)] = state.to_header() if state else ""
        trace_states.append(text)
        names.append(span.name)
        kinds.append(kind_names[span.kind._value_])

        resource = span.resource
        resource_columns = resources.get(id(resource))
        if resource_columns is None:
            resource_columns = resources[id(resource)] = _resource_columns(resource)
        service_names.append(resource_columns.service_name)
        resource_maps.add(resource_columns.attributes)

        scope = span.instrumentation_scope
        if scope is not None:
            scope_names.append(scope.name or "")
            scope_versions.append(scope.version or "")
        else:
            scope_names.append("")
            scope_versions.append("")

        attributes = _span_attributes(span)
        span_counts.append(len(attributes))
        if attributes:
            span_keys.extend(attributes)
            span_values.extend(attributes.values())
        # time.Duration(end - start) stored in a UInt64 column: a clock step backwards would
        # be a huge number there, so it is written as 0.
        durations.append(end - start if end is not None and end > start else 0)

        status = span.status
        status_codes.append(status_names[status.status_code._value_])
        status_messages.append(status.description or "")

        events = getattr(span, "_events", None)
        if events is None:
            events = span.events
        count = len(events)
        event_counts.append(count)
        if count:
            for event in events:
                event_timestamps.append(event.timestamp or 0)
                event_names.append(event.name)
                event_maps.add(_raw_mapping(event.attributes))

        links = getattr(span, "_links", None)
        if links is None:
            links = span.links
        count = len(links)
        link_counts.append(count)
        if count:
            for link in links:
                link_context = link.context
                link_trace_ids.append(_hex_trace_id(link_context.trace_id))
                link_span_ids.append(_hex_span_id(link_context.span_id))
                link_state = link_context.trace_state
                link_trace_states.append(link_state.to_header() if link_state else "")
                link_maps.add(_raw_mapping(link.attributes))

    out: list[bytes] = [_leb128(len(INSERT_COLUMNS)), _leb128(rows)]
    if not rows:
        # A block without rows carries the column names and types only (no data, no prefixes).
        for name, type_name in INSERT_COLUMNS:
            _column_header(name, type_name, out)
        return EncodedBatch(b"".join(out), 0)
    columns = iter(INSERT_COLUMNS)

    def header() -> None:
        # Column name and type; a type holding LowCardinality starts its data with the version.
        name, type_name = next(columns)
        _column_header(name, type_name, out)
        if "LowCardinality" in type_name:
            out.append(_LOW_CARDINALITY_VERSION)

    header()
    out.append(struct.pack(f"<{rows}q", *timestamps))
    for column in (trace_ids, span_ids, parent_ids):
        header()
        _string_column(column, out)
    header()
    _repeating_string_column(trace_states, out)
    for column in (names, kinds, service_names):
        header()
        _low_cardinality_column(column, out)
    header()
    resource_maps.encode(out, repeating_values=True)
    for column in (scope_names, scope_versions):
        header()
        _repeating_string_column(column, out)
    header()
    span_maps.encode(out)
    header()
    out.append(struct.pack(f"<{rows}Q", *durations))
    header()
    _low_cardinality_column(status_codes, out)
    header()
    _string_column(status_messages, out)

    header()
    _offsets(event_counts, out)
    out.append(struct.pack(f"<{len(event_timestamps)}q", *event_timestamps))
    header()
    _offsets(event_counts, out)
    _low_cardinality_column(event_names, out)
    header()
    _offsets(event_counts, out)
    event_maps.encode(out)

    for column in (link_trace_ids, link_span_ids):
        header()
        _offsets(link_counts, out)
        _string_column(column, out)
    header()
    _offsets(link_counts, out)
    _repeating_string_column(link_trace_states, out)
    header()
    _offsets(link_counts, out)
    link_maps.encode(out)

    return EncodedBatch(b"".join(out), rows)
