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
everything else in the exporter. Here a batch is read column by column, with no Python loop
per span or per attribute: each span field is one ``map`` over an ``attrgetter`` (the SDK's
``ReadableSpan`` through the fields behind its properties), all keys of all spans are one
``chain`` over their attribute dicts, all values another, and each value is turned into its
UTF-8 text in the same C-level pass that reads it (its type picks a converter). A batch is
large (8192 spans: ~170,000 attribute values), so every extra pass over the span objects costs
cache misses: each object is read once. Resources, scopes and trace states, shared by many
spans, are converted once each and their bytes repeated. ``LowCardinality`` columns (span
names, attribute keys) are written as a dictionary plus one small index per row, as the table
stores them: half the bytes of plain strings, and nothing for the server to convert.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import operator
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate, chain
from operator import attrgetter, itemgetter, methodcaller, sub
from typing import Any, NamedTuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, Status

from llmtel.exporter_clickhouse.schema import TRACES_COLUMNS

# (column, ClickHouse type) in the Collector's insert order, with the table's types, so the
# server converts nothing: the schema module's list, which the DDL templates match.
INSERT_COLUMNS: tuple[tuple[str, str], ...] = TRACES_COLUMNS
INSERT_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in INSERT_COLUMNS)

# pdata's ptrace.SpanKind.String() and ptrace.StatusCode.String(), indexed by the Python SDK's
# enum values. The Python SDK has no "unspecified" kind: its INTERNAL (0) is exported as OTLP
# SPAN_KIND_INTERNAL, which pdata names "Internal". "Unspecified" comes only from OTLP received
# by `llmtel serve` (SPAN_KIND_UNSPECIFIED), under an index no SDK kind uses.
SPAN_KIND_NAMES: tuple[str, ...] = ("Internal", "Server", "Client", "Producer", "Consumer", "Unspecified")
SPAN_KIND_UNSPECIFIED = 5
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


def _string_column(values: list[str]) -> bytes:
    """A Native ``String`` column: per value a LEB128 length, then the UTF-8 bytes."""
    try:
        encoded = list(map(str.encode, values))
    except UnicodeEncodeError:
        encoded = list(map(_encode_text, values))
    return _bytes_column(encoded)


def _bytes_column(encoded: list[bytes]) -> bytes:
    """A Native ``String`` column of values already in UTF-8."""
    chunks: list[bytes] = [b""] * (2 * len(encoded))
    chunks[0::2] = map(_PREFIXES.__getitem__, map(len, encoded))
    chunks[1::2] = encoded
    return b"".join(chunks)


def _repeating_string_column(values: Iterable[str]) -> bytes:
    """A ``String`` column whose values repeat a lot: each distinct value is encoded once."""
    return b"".join(map(_REPEATING.__getitem__, values))


def _little_endian(code: str, values: Iterable[int]) -> bytes:
    """Fixed-width integers as ClickHouse stores them (little-endian), from an ``array`` type code."""
    packed = array(code, values)
    if _BIG_ENDIAN_HOST:
        packed.byteswap()
    return packed.tobytes()


_BIG_ENDIAN_HOST = sys.byteorder == "big"


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


def _low_cardinality_column(values: Iterable[str], out: list[bytes]) -> None:
    """The data of a ``LowCardinality(String)`` column (its version prefix is written apart)."""
    positions = _Positions()
    indexes = list(map(positions.__getitem__, values))
    _low_cardinality_data(positions, indexes, out)


def _low_cardinality_data(dictionary: Mapping[str, int], indexes: list[int], out: list[bytes]) -> None:
    """A LowCardinality chunk: ``dictionary`` (values in position order) and one index per row."""
    if not indexes:
        return
    size = len(dictionary)
    width, code = next((width, code) for width, bound, code in _INDEX_FORMATS if size < bound)
    out.append(struct.pack("<QQ", width | _HAS_ADDITIONAL_KEYS | _NEED_UPDATE_DICTIONARY, size))
    out.append(_repeating_string_column(dictionary))
    out.append(struct.pack("<Q", len(indexes)))
    out.append(bytes(indexes) if code == "B" else _little_endian(code, indexes))


def _offsets(counts: Iterable[int]) -> bytes:
    """Array offsets: UInt64 running totals of the per-row lengths."""
    return _little_endian("Q", accumulate(counts))


def _column_header(name: str, type_name: str, out: list[bytes]) -> None:
    for text in (name, type_name):
        data = text.encode()
        out.append(_PREFIXES[len(data)] + data)


def _hex_id_column(ids: list, digits: int) -> bytes:
    """A ``String`` column of ids in lowercase hex, ``digits`` wide; ``''`` for 0 (pdata's invalid id)."""
    if not ids:
        return b""
    if all(ids) and min(ids) > 0 and max(ids) < 1 << (4 * digits):
        # Every text is `digits` ASCII characters: the length prefix is one constant character.
        return "".join(map(f"{chr(digits)}{{:0{digits}x}}".format, ids)).encode("ascii")
    width = f"0{digits}x"
    return _string_column([format(number, width) if number else "" for number in ids])


# --- attribute values → text ---------------------------------------------------------------


class _FloatTexts(dict):
    """float → its AsString text in UTF-8; short texts (temperature 0.7, top_p 1) are kept, as
    such values repeat, while a cost or a latency rarely does and would only evict them."""

    def __missing__(self, value: float) -> bytes:
        text = format_double(value).encode()
        # 0.0 and -0.0 are one key with two texts, NaN is never found again: neither is kept.
        if len(text) <= 8 and value and value == value and len(self) < 4096:
            self[value] = text
        return text


class _TupleTexts(dict):
    """Tuples of strings (``finish_reasons``, ``stop_sequences``) → JSON text in UTF-8, made once.

    Only all-str tuples are kept (``(True,) == (1,)`` as keys, with different texts), so a hit is
    a tuple equal to a kept one: the same text.
    """

    def __missing__(self, value: tuple) -> bytes:
        text = _encode_text(as_string(value))
        if value and len(self) < 4096 and all(type(item) is str for item in value):
            self[value] = text
        return text


class _Converters(dict):
    """value type → a C-level callable giving the UTF-8 of its AsString text; other types → Python."""

    def __missing__(self, kind: type) -> Any:
        return _any_value_bytes


def _any_value_bytes(value: Any) -> bytes:
    return _encode_text(as_string(value))


# b"%d" % n is int.__repr__ straight to bytes; str.encode fails on a lone surrogate, and the
# tuple cache on an array holding a key-value list (a dict: not hashable), and then the column
# is made again through _any_value_bytes (see _value_column).
_VALUE_BYTES = _Converters({
    str: str.encode,
    int: b"%d".__mod__,
    float: _FloatTexts().__getitem__,
    bool: {True: b"true", False: b"false"}.__getitem__,
    tuple: _TupleTexts().__getitem__,
})

# operator.call is new in Python 3.11.
_call = getattr(operator, "call", None) or (lambda function, value: function(value))


def _value_column(values: list) -> bytes:
    """Attribute values as a ``String`` column of their AsString texts.

    One pass over the values: each is read once (its type picks a converter, the converter
    gives its UTF-8 bytes), all in C-level ``map`` calls; a Python frame runs only for a value
    that needs one (a float seen for the first time, an unusual type).
    """
    try:
        encoded = list(map(_call, map(_VALUE_BYTES.__getitem__, map(type, values)), values))
    except (UnicodeEncodeError, TypeError):  # TypeError: an array holding a key-value list (unhashable)
        encoded = list(map(_any_value_bytes, values))
    return _bytes_column(encoded)


# --- spans → column lists ------------------------------------------------------------------


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


def _span_attributes(span: Any) -> Mapping[str, Any]:
    # The SDK's ReadableSpan keeps the BoundedAttributes in _attributes; the public property
    # allocates a MappingProxyType around it on every read.
    raw = getattr(span, "_attributes", None)
    if raw is None and not hasattr(span, "_attributes"):
        raw = span.attributes
    return _raw_mapping(raw)


def _plain_mappings(attributes: list) -> list[Mapping[str, Any]]:
    """Attribute holders (BoundedAttributes, dicts, None) → the mappings to read, read-only."""
    kinds = set(map(type, attributes))
    if kinds == {dict}:
        return attributes
    if kinds == {BoundedAttributes}:
        with contextlib.suppress(AttributeError):  # an SDK that renamed its internals: the generic way
            return list(map(_INNER_DICT, attributes))
    return list(map(_raw_mapping, attributes))


def _plain_sequences(items: list) -> list[Sequence[Any]]:
    """Event or link holders (the SDK's BoundedList, lists, tuples, None) → sequences to read."""
    kinds = set(map(type, items))
    if kinds <= {list, tuple}:
        return items
    if kinds == {BoundedList}:
        # BoundedList iterates under a lock through a Python-level __iter__; its deque does not.
        with contextlib.suppress(AttributeError):
            return list(map(_INNER_DEQUE, items))
    return [() if item is None else item for item in items]


def _span_events(span: Any) -> Any:
    events = getattr(span, "_events", None)
    return span.events if events is None else events


def _span_links(span: Any) -> Any:
    links = getattr(span, "_links", None)
    return span.links if links is None else links


_INNER_DICT = attrgetter("_dict")
_INNER_DEQUE = attrgetter("_dq")
_SDK_SPAN_FIELDS = ("_start_time", "_end_time", "_name", "_context", "_parent", "_kind", "_resource",
                    "_instrumentation_scope", "_status")
_PUBLIC_SPAN_FIELDS = ("start_time", "end_time", "name", "context", "parent", "kind", "resource",
                       "instrumentation_scope", "status")


class _SpanFields(NamedTuple):
    """A batch read column-wise: one list per span field, in span order."""

    starts: list
    ends: list
    names: list
    contexts: list
    parents: list
    kinds: list
    resources: list
    scopes: list
    statuses: list
    attributes: list
    events: list
    links: list


def _read_fields(spans: Sequence[Any]) -> _SpanFields:
    """Each field of every span in one C-level pass (``map`` over an ``attrgetter``).

    The SDK's own ``ReadableSpan`` is read through the attributes its properties return, which
    saves a Python-level call per field and span; other span objects (``otlp.ReceivedSpan``, a
    wrapper) through their public properties, exactly as ``ReadableSpan`` documents them.
    """
    if set(map(type, spans)) == {ReadableSpan}:
        try:
            fields = [list(map(attrgetter(name), spans)) for name in _SDK_SPAN_FIELDS]
            attributes = _plain_mappings(list(map(attrgetter("_attributes"), spans)))
            events = _plain_sequences(list(map(attrgetter("_events"), spans)))
            links = _plain_sequences(list(map(attrgetter("_links"), spans)))
            return _SpanFields(*fields, attributes, events, links)
        except AttributeError:
            pass  # an SDK whose ReadableSpan keeps its fields otherwise: read the properties
    fields = [list(map(attrgetter(name), spans)) for name in _PUBLIC_SPAN_FIELDS]
    attributes = list(map(_span_attributes, spans))
    events = _plain_sequences(list(map(_span_events, spans)))
    links = _plain_sequences(list(map(_span_links, spans)))
    return _SpanFields(*fields, attributes, events, links)


def _context_fields(contexts: list) -> tuple[list, list, list]:
    """(trace ids, span ids, trace states) of span contexts."""
    if set(map(type, contexts)) == {SpanContext}:
        # SpanContext is a tuple; its properties are Python-level item reads.
        return (list(map(itemgetter(0), contexts)), list(map(itemgetter(1), contexts)),
                list(map(itemgetter(4), contexts)))
    return (list(map(attrgetter("trace_id"), contexts)), list(map(attrgetter("span_id"), contexts)),
            list(map(attrgetter("trace_state"), contexts)))


def _trace_state_column(states: list) -> bytes:
    """The ``TraceState`` column: each distinct state object's header is made once."""
    distinct = dict(zip(map(id, states), states, strict=True))
    encoded = {key: _REPEATING[state.to_header() if state else ""] for key, state in distinct.items()}
    return b"".join(map(encoded.__getitem__, map(id, states)))


class _MapColumn:
    """A ``Map(LowCardinality(String), String)`` column, or the maps inside an ``Array`` of them."""

    def __init__(self, mappings: list[Mapping[str, Any]]) -> None:
        self.counts = list(map(len, mappings))
        self.keys = list(chain.from_iterable(mappings))
        self.values = list(chain.from_iterable(map(methodcaller("values"), mappings)))

    def encode(self, out: list[bytes]) -> None:
        """Offsets, keys, values; the caller writes the LowCardinality version prefix first."""
        out.append(_offsets(self.counts))
        _low_cardinality_column(self.keys, out)
        out.append(_value_column(self.values))


class _ResourceColumns(NamedTuple):
    service_name: str
    keys: tuple[str, ...]
    values: bytes  # the Native String bytes of the attribute values, in key order


def _resource_columns(resource: Any) -> _ResourceColumns:
    attributes = _raw_mapping(resource.attributes)
    service_name = attributes.get("service.name")
    # The Collector reads service.name with Value.Str(), which is "" for a non-string value.
    return _ResourceColumns(
        service_name if type(service_name) is str else "",
        tuple(attributes),
        _repeating_string_column(map(as_string, attributes.values())),
    )


def _resource_and_scope_columns(fields: _SpanFields, out: list[bytes], header: Any) -> None:
    """ServiceName, ResourceAttributes, ScopeName, ScopeVersion: a batch holds a few resources
    and scopes, each shared by many spans, so each is converted once and its bytes repeated."""
    resource_ids = list(map(id, fields.resources))
    distinct = dict(zip(resource_ids, fields.resources, strict=True))
    resources = {key: _resource_columns(resource) for key, resource in distinct.items()}
    header()
    _low_cardinality_column(map(attrgetter("service_name"), map(resources.__getitem__, resource_ids)), out)

    header()
    # Keys numbered in order of first use, as a flat pass over every span's keys would number
    # them: resources are visited in order of first appearance, each key list in its order.
    positions = _Positions()
    key_indexes = {key: tuple(map(positions.__getitem__, columns.keys)) for key, columns in resources.items()}
    count_of = {key: len(columns.keys) for key, columns in resources.items()}
    values_of = {key: columns.values for key, columns in resources.items()}
    out.append(_offsets(map(count_of.__getitem__, resource_ids)))
    _low_cardinality_data(positions, list(chain.from_iterable(map(key_indexes.__getitem__, resource_ids))), out)
    out.append(b"".join(map(values_of.__getitem__, resource_ids)))

    scope_ids = list(map(id, fields.scopes))
    scopes = dict(zip(scope_ids, fields.scopes, strict=True))
    names = {key: _REPEATING[scope.name or "" if scope is not None else ""] for key, scope in scopes.items()}
    versions = {key: _REPEATING[scope.version or "" if scope is not None else ""] for key, scope in scopes.items()}
    header()
    out.append(b"".join(map(names.__getitem__, scope_ids)))
    header()
    out.append(b"".join(map(versions.__getitem__, scope_ids)))


def _durations(starts: list, ends: list) -> list[int]:
    # time.Duration(end - start) stored in a UInt64 column: a clock step backwards would be a
    # huge number there, so it is written as 0 (as is a span without an end).
    if None not in ends:
        durations = list(map(sub, ends, starts))
        if not durations or min(durations) >= 0:
            return durations
    return [end - start if end is not None and end > start else 0 for start, end in zip(starts, ends, strict=True)]


def _event_columns(events: list[Sequence[Any]], out: list[bytes], header: Any) -> None:
    """Events.Timestamp, Events.Name, Events.Attributes: arrays per span, flattened."""
    counts = list(map(len, events))
    offsets = _offsets(counts)
    flat = list(chain.from_iterable(events))
    try:
        if not set(map(type, flat)) <= {Event}:
            raise AttributeError  # not only SDK events: read the public properties
        timestamps = list(map(attrgetter("_timestamp"), flat))
        names = list(map(attrgetter("_name"), flat))
        attributes = _plain_mappings(list(map(attrgetter("_attributes"), flat)))
    except AttributeError:
        timestamps = list(map(attrgetter("timestamp"), flat))
        names = list(map(attrgetter("name"), flat))
        attributes = [_raw_mapping(event.attributes) for event in flat]
    if None in timestamps:
        timestamps = [timestamp or 0 for timestamp in timestamps]
    header()
    out.append(offsets)
    out.append(_little_endian("q", timestamps))
    header()
    out.append(offsets)
    _low_cardinality_column(names, out)
    header()
    out.append(offsets)
    _MapColumn(attributes).encode(out)


def _link_columns(links: list[Sequence[Any]], out: list[bytes], header: Any) -> None:
    """Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes (links are rare: a plain loop)."""
    offsets = _offsets(map(len, links))
    flat = list(chain.from_iterable(links))
    contexts = [link.context for link in flat]
    trace_ids, span_ids, states = _context_fields(contexts) if contexts else ([], [], [])
    for column in (_hex_id_column(trace_ids, 32), _hex_id_column(span_ids, 16)):
        header()
        out.append(offsets)
        out.append(column)
    header()
    out.append(offsets)
    out.append(_repeating_string_column(state.to_header() if state else "" for state in states))
    header()
    out.append(offsets)
    _MapColumn([_raw_mapping(link.attributes) for link in flat]).encode(out)


def encode_spans(spans: Sequence[ReadableSpan]) -> EncodedBatch:
    """One Native block holding ``spans`` as ``otel_traces`` rows (columns: ``INSERT_COLUMNS``)."""
    rows = len(spans)
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

    fields = _read_fields(spans)
    starts = fields.starts
    if None in starts:
        starts = [start or 0 for start in starts]
    trace_ids, span_ids, states = _context_fields(fields.contexts)
    parents = fields.parents
    parent_ids = [0 if parent is None else parent.span_id for parent in parents]

    header()
    out.append(_little_endian("q", starts))
    for column in (_hex_id_column(trace_ids, 32), _hex_id_column(span_ids, 16), _hex_id_column(parent_ids, 16)):
        header()
        out.append(column)
    header()
    out.append(_trace_state_column(states))
    header()
    _low_cardinality_column(fields.names, out)
    header()
    # Enum members are read through ``_value_`` (the documented sunder attribute): ``.value``
    # is a Python-level descriptor call, and hashing a member a Python-level __hash__.
    _low_cardinality_column(map(SPAN_KIND_NAMES.__getitem__, map(_ENUM_VALUE, fields.kinds)), out)
    _resource_and_scope_columns(fields, out, header)
    header()
    _MapColumn(fields.attributes).encode(out)
    header()
    out.append(_little_endian("Q", _durations(starts, fields.ends)))

    statuses = fields.statuses
    if set(map(type, statuses)) == {Status}:
        codes, descriptions = map(attrgetter("_status_code"), statuses), map(attrgetter("_description"), statuses)
    else:
        codes, descriptions = map(attrgetter("status_code"), statuses), map(attrgetter("description"), statuses)
    header()
    _low_cardinality_column(map(STATUS_CODE_NAMES.__getitem__, map(_ENUM_VALUE, codes)), out)
    header()
    messages = list(descriptions)
    out.append(_string_column([message or "" for message in messages]) if any(messages) else b"\x00" * rows)

    _event_columns(fields.events, out, header)
    _link_columns(fields.links, out, header)
    return EncodedBatch(b"".join(out), rows)


_ENUM_VALUE = attrgetter("_value_")
