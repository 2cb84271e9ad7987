"""An OTLP ``ExportTraceServiceRequest`` → one Native block, without a Python object per span or attribute.

``encode_request(request, body)`` gives the very bytes ``columns.encode_spans(otlp._spans_of(request).spans)``
gives, with the same rejected count and message, at a fraction of the cost: ``llmtel serve``
shares its CPUs with the exporter processes that send to it, and building a ``ReceivedSpan``
(context, status, an attribute dict, events) per span cost twice the encoding itself.

Where the cost was: reading a span's attributes through the protobuf classes makes two Python
objects per attribute (the ``KeyValue`` and its ``AnyValue``), about 0.7 µs each pair. Here the
body is parsed a second time with *column messages*: messages declaring the same field numbers
as OTLP, but with attributes as ``repeated bytes`` (each ``KeyValue`` kept serialized), so the
parser hands back bytes and no message objects. Then two protobuf facts do the rest in C:

- fields of one number that occur several times in a message are appended to one repeated
  field, so all the serialized ``KeyValue`` s of a request joined end to end parse, as a message
  ``{repeated string key = 1; repeated bytes value = 2}``, into the list of every key and the list
  of every serialized ``AnyValue``; and those ``AnyValue`` s joined parse, as ``{repeated bytes
  string_value = 1; repeated bool bool_value = 2; ...}``, into one list per value type, which the
  first byte of each value (its field tag) merges back into order;
- a value of a ``String`` column in ClickHouse's Native format is a LEB128 length and the UTF-8
  bytes, and a serialized string ``AnyValue`` is its tag byte, then a varint length (LEB128
  too) and the UTF-8 bytes: without the tag, it is written as it arrived.

Joined fields line up with their attributes only when every attribute has exactly one key and one
value field, which canonical protobuf (what every OTLP SDK writes) guarantees: so the fast path
runs only for a body that re-serializes to itself, and whose values hold no field this OTLP
version does not know (their sizes add up). Everything it cannot express exactly as a per-span
``dict`` would — such a body, a span ``otlp`` rejects (bad ids, times past 2262: partial
success), a key repeated inside one attribute list (a dict keeps the first position and the last
value), an empty ``AnyValue`` or an empty key — sends the request, whole, down the per-span path
(``otlp._spans_of`` + ``columns.encode_spans``), so its result is the same by construction. None
of them comes from a conforming SDK.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import chain, islice, repeat
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from llmtel.exporter_clickhouse import columns, otlp
from llmtel.exporter_clickhouse.columns import INSERT_COLUMNS, STATUS_CODE_NAMES, EncodedBatch

__all__ = ["EncodedRequest", "encode_request"]


class EncodedRequest(NamedTuple):
    batch: EncodedBatch  # rows == 0 when no span was accepted
    rejected: int
    error_message: str  # why spans were rejected ("" when none were)


# --- the column messages ------------------------------------------------------------------------

# (message, [(field, number, type, repeated, message type)]): field numbers as in
# opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto; fields not listed are
# skipped by the parser (kept as unknown fields).
_B = descriptor_pb2.FieldDescriptorProto
_COLUMN_MESSAGES = (
    ("Request", [("resource_spans", 1, _B.TYPE_MESSAGE, True, "ResourceSpans")]),
    ("ResourceSpans", [("resource", 1, _B.TYPE_BYTES, False, ""),
                       ("scope_spans", 2, _B.TYPE_MESSAGE, True, "ScopeSpans")]),
    ("ScopeSpans", [("scope", 1, _B.TYPE_BYTES, False, ""), ("spans", 2, _B.TYPE_MESSAGE, True, "Span")]),
    ("Span", [("trace_id", 1, _B.TYPE_BYTES, False, ""), ("span_id", 2, _B.TYPE_BYTES, False, ""),
              ("trace_state", 3, _B.TYPE_STRING, False, ""), ("parent_span_id", 4, _B.TYPE_BYTES, False, ""),
              ("name", 5, _B.TYPE_STRING, False, ""), ("kind", 6, _B.TYPE_INT32, False, ""),
              ("start_time_unix_nano", 7, _B.TYPE_FIXED64, False, ""),
              ("end_time_unix_nano", 8, _B.TYPE_FIXED64, False, ""),
              ("attributes", 9, _B.TYPE_BYTES, True, ""), ("events", 11, _B.TYPE_MESSAGE, True, "Event"),
              ("links", 13, _B.TYPE_BYTES, True, ""), ("status", 15, _B.TYPE_BYTES, False, "")]),
    ("Event", [("time_unix_nano", 1, _B.TYPE_FIXED64, False, ""), ("name", 2, _B.TYPE_STRING, False, ""),
               ("attributes", 3, _B.TYPE_BYTES, True, "")]),
    # KeyValue fields of many attributes, appended.
    ("KeyValues", [("key", 1, _B.TYPE_STRING, True, ""), ("value", 2, _B.TYPE_BYTES, True, "")]),
    # AnyValue fields of many values, appended: one list per case of the oneof.
    ("AnyValues", [("string_value", 1, _B.TYPE_BYTES, True, ""), ("bool_value", 2, _B.TYPE_BOOL, True, ""),
                   ("int_value", 3, _B.TYPE_INT64, True, ""), ("double_value", 4, _B.TYPE_DOUBLE, True, ""),
                   ("array_value", 5, _B.TYPE_BYTES, True, ""), ("kvlist_value", 6, _B.TYPE_BYTES, True, ""),
                   ("bytes_value", 7, _B.TYPE_BYTES, True, "")]),
)
_PACKAGE = "llmtel.otlp_columns"


def _column_classes() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="llmtel/otlp_columns.proto", package=_PACKAGE, syntax="proto3")
    for name, fields in _COLUMN_MESSAGES:
        message = file.message_type.add(name=name)
        for field_name, number, field_type, repeated, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=field_type,
                                      label=_B.LABEL_REPEATED if repeated else _B.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
            if repeated and field_type not in (_B.TYPE_MESSAGE, _B.TYPE_BYTES, _B.TYPE_STRING):
                # Values arrive one field each (unpacked); the parser takes both forms anyway.
                field.options.packed = False
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name, _ in _COLUMN_MESSAGES}


_CLASSES = _column_classes()
_RequestColumns = _CLASSES["Request"]
_KeyValues = _CLASSES["KeyValues"]
_AnyValues = _CLASSES["AnyValues"]

# The first byte of a serialized AnyValue (its field tag: number << 3 | wire type) → its case.
_TAGS = {0x0A: "string_value", 0x10: "bool_value", 0x18: "int_value", 0x21: "double_value",
         0x2A: "array_value", 0x32: "kvlist_value", 0x3A: "bytes_value"}


# --- attribute values → their AsString texts ---------------------------------------------------


class _ComplexTexts(dict):
    """A serialized ArrayValue or KeyValueList → the UTF-8 of its AsString text, as the encoder writes
    the value ``otlp`` reads from it. Bounded: a list of ids would grow it forever."""

    def __init__(self, message_type: Any, case: str) -> None:
        super().__init__()
        self.message_type = message_type
        self.case = case

    def __missing__(self, raw: bytes) -> bytes:
        value = otlp._value(AnyValue(**{self.case: self.message_type.FromString(raw)}))
        # What the encoder's converters give for a tuple or a dict, without hashing the value
        # (an array may hold a key-value list, which cannot be a dict key).
        text = columns._encode_text(columns.as_string(value))
        if len(raw) <= 256:
            if len(self) >= 4096:
                self.clear()
            self[raw] = text
        return text


def _double_texts(values: Sequence[float]) -> Iterator[bytes]:
    """Doubles → their AsString texts (``columns.format_double``), in C-level passes.

    ``repr`` is Go's text for every positional double but for a trailing ``.0``, which Go leaves
    out; the few in exponent form, infinities and NaN (an ``e`` or ``n`` in ``repr``) take the
    encoder's own converter.
    """
    reprs = list(map(float.__repr__, values))
    joined = "\x00".join(reprs) + "\x00"
    texts = joined.replace(".0\x00", "\x00").encode("ascii").split(b"\x00")[:-1]
    if "e" in joined or "n" in joined:
        convert = columns._VALUE_BYTES[float]
        for position in [position for position, text in enumerate(reprs) if "e" in text or "n" in text]:
            texts[position] = convert(values[position])
    return iter(texts)


_BOOL_TEXTS = {True: b"true", False: b"false"}
_ARRAY_TEXTS = _ComplexTexts(ArrayValue, "array_value")
_KVLIST_TEXTS = _ComplexTexts(KeyValueList, "kvlist_value")
# Each case's values (as the column message gives them) → their texts: C-level, but for the
# first sight of a float or of an array.
_TEXTS_OF: dict[str, Callable[[Sequence[Any]], Iterator[bytes]]] = {
    "string_value": iter,
    "bool_value": lambda values: map(_BOOL_TEXTS.__getitem__, values),
    "int_value": lambda values: map(b"%d".__mod__, values),
    "double_value": _double_texts,
    "array_value": lambda values: map(_ARRAY_TEXTS.__getitem__, values),
    "kvlist_value": lambda values: map(_KVLIST_TEXTS.__getitem__, values),
    "bytes_value": lambda values: map(base64.b64encode, values),
}


class _NeedsSpans(Exception):
    """The request holds something only the per-span path handles exactly (see the module docstring)."""


_FIRST_BYTE = itemgetter(0)


_TAG_OF_STRING = 0x0A
# A serialized string AnyValue is its tag, then the length as a varint (LEB128) and the UTF-8
# bytes: without the tag, it is the value's Native String encoding already.
_WITHOUT_TAG = itemgetter(slice(1, None))


def _value_column(values: list[bytes]) -> bytes:
    """Serialized AnyValues (each canonical) → a Native ``String`` column of their AsString texts."""
    if not values:
        return b""
    if b"" in values:
        raise _NeedsSpans  # an empty value: rare, and the per-span path writes it
    tags = list(map(_FIRST_BYTE, values))
    found = set(tags)
    if not found <= _TAGS.keys():
        raise _NeedsSpans
    joined = b"".join(values)
    parsed = _AnyValues.FromString(joined)
    if sum(len(getattr(parsed, case)) for case in _TEXTS_OF) != len(values):
        raise _NeedsSpans  # a value with more than one field: the lists would not line up
    parsed.DiscardUnknownFields()
    if parsed.ByteSize() != len(joined):
        raise _NeedsSpans  # a value holding an unknown field (a newer OTLP): no longer tag, length, bytes
    if found == {_TAG_OF_STRING}:
        return b"".join(map(_WITHOUT_TAG, values))
    # Per tag, how to make a value's Native bytes: strings from themselves; the other cases
    # hand out, in order, the texts made from their list (partial(next, it)(value) is
    # next(it, value), and each of these lists holds exactly one text per value of its case).
    encoders: dict[int, Callable[[bytes], bytes]] = {_TAG_OF_STRING: _WITHOUT_TAG}
    for tag in found - {_TAG_OF_STRING}:
        texts = list(_TEXTS_OF[_TAGS[tag]](getattr(parsed, _TAGS[tag])))
        encoded = list(map(bytes.__add__, map(columns._PREFIXES.__getitem__, map(len, texts)), texts))
        encoders[tag] = partial(next, iter(encoded))
    return b"".join(map(columns._call, map(encoders.__getitem__, tags), values))


class _Maps(NamedTuple):
    """Maps (``Map(LowCardinality(String), String)`` rows) read column-wise."""

    counts: list[int]  # entries per map
    keys: list[tuple[str, ...]]  # each map's keys
    values: bytes  # the Native String column of the values' AsString texts

    def encode(self, out: list[bytes]) -> None:
        """What ``columns._MapColumn.encode`` writes for the same maps as dicts."""
        out.append(columns._offsets(self.counts))
        if not any(self.counts):
            out.append(self.values)
            return
        # The keys as LowCardinality: a dictionary numbered in order of first use, and a small
        # index per key. Maps mostly repeat a few key sequences, so each distinct sequence is
        # numbered once (in order of first appearance, which numbers its keys as a flat pass
        # over all keys would) and its index bytes repeated.
        sequences = dict.fromkeys(self.keys)
        positions = columns._Positions()
        numbered = {keys: list(map(positions.__getitem__, keys)) for keys in sequences}
        width, code = next((width, code) for width, bound, code in columns._INDEX_FORMATS if len(positions) < bound)
        index_bytes = {keys: bytes(indexes) if code == "B" else columns._little_endian(code, indexes)
                       for keys, indexes in numbered.items()}
        out.append(struct.pack("<QQ", width | columns._HAS_ADDITIONAL_KEYS | columns._NEED_UPDATE_DICTIONARY,
                               len(positions)))
        out.append(columns._repeating_string_column(positions))
        out.append(struct.pack("<Q", sum(self.counts)))
        out.append(b"".join(map(index_bytes.__getitem__, self.keys)))
        out.append(self.values)


_ATTRIBUTES = attrgetter("attributes")


def _maps(holders: Sequence[Any]) -> _Maps:
    """The ``attributes`` (serialized KeyValues) of each holder (span, event) as map columns."""
    key_values = list(map(_ATTRIBUTES, holders))
    counts = list(map(len, key_values))
    entries = list(chain.from_iterable(key_values))
    parsed = _KeyValues.FromString(b"".join(entries))
    keys, values = list(parsed.key), list(parsed.value)
    if len(keys) != len(entries) or len(values) != len(entries):
        raise _NeedsSpans  # an empty key (not serialized) or an attribute without a value
    # Each map's keys as a tuple: islice over one shared iterator cuts the flat list by the counts.
    flat_keys = iter(keys)
    map_keys = list(map(tuple, map(islice, repeat(flat_keys), counts)))
    for sequence in set(map_keys):
        if len(set(sequence)) != len(sequence):
            raise _NeedsSpans
    return _Maps(counts, map_keys, _value_column(values))


def _link_maps(maps: list[dict[str, Any]]) -> _Maps:
    """Link attributes (``otlp``'s dicts) as map columns, the values' texts made without hashing
    them (an array holding a key-value list cannot be a dict key)."""
    texts = [columns._encode_text(columns.as_string(value)) for attributes in maps for value in attributes.values()]
    return _Maps(list(map(len, maps)), list(map(tuple, maps)), columns._bytes_column(texts))


# --- spans → columns ----------------------------------------------------------------------------

# OTLP SpanKind → pdata's name: UNSPECIFIED (0) and values the spec does not define are "Unspecified".
_KIND_NAMES = dict(enumerate(("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")))
_STATUS_NAMES = dict(enumerate(STATUS_CODE_NAMES))

_TRACE_ID = attrgetter("trace_id")
_SPAN_ID = attrgetter("span_id")
_PARENT_SPAN_ID = attrgetter("parent_span_id")
_TRACE_STATE = attrgetter("trace_state")
_NAME = attrgetter("name")
_KIND = attrgetter("kind")
_START = attrgetter("start_time_unix_nano")
_END = attrgetter("end_time_unix_nano")
_STATUS = attrgetter("status")
_EVENTS = attrgetter("events")
_LINKS = attrgetter("links")
_TIME = attrgetter("time_unix_nano")

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


class _Statuses(dict):
    """A serialized Status → (StatusCode name, message); bounded (messages can be unique)."""

    def __missing__(self, raw: bytes) -> tuple[str, str]:
        status = Status.FromString(raw)
        # otlp: a code the spec does not define is Unset.
        pair = (_STATUS_NAMES.get(status.code, "Unset"), status.message)
        if len(self) >= 4096:
            self.clear()
        self[raw] = pair
        return pair


_STATUSES = _Statuses()


class _SpanRows(NamedTuple):
    """The spans of a request in order, with each one's resource and scope (shared objects)."""

    spans: list[Any]
    resources: list[Any]
    scopes: list[Any]


def _span_rows(request: Any) -> _SpanRows:
    spans: list[Any] = []
    resources: list[Any] = []
    scopes: list[Any] = []
    for resource_spans in request.resource_spans:
        # As otlp builds them: one object per ResourceSpans and ScopeSpans, which the encoder
        # converts once each (it tells them apart by identity).
        resource = otlp._Resource(otlp._attributes(Resource.FromString(resource_spans.resource).attributes))
        for scope_spans in resource_spans.scope_spans:
            scope_message = InstrumentationScope.FromString(scope_spans.scope)
            scope = otlp._Scope(scope_message.name, scope_message.version)
            chunk = list(scope_spans.spans)
            spans.extend(chunk)
            resources.extend(repeat(resource, len(chunk)))
            scopes.extend(repeat(scope, len(chunk)))
    return _SpanRows(spans, resources, scopes)


def _id_column(ids: list[bytes], width: int) -> bytes:
    """A ``String`` column of ids already checked to be ``width`` bytes and not zero: lowercase hex."""
    # Every text is 2 * width ASCII characters: its length prefix is that one character, which
    # join puts between the texts.
    prefix = chr(2 * width)
    return (prefix + prefix.join(map(bytes.hex, ids))).encode("ascii")


def _parent_column(parents: list[bytes]) -> bytes:
    if _ZERO_SPAN_ID not in parents and b"" not in parents:
        return _id_column(parents, 8)
    # A root span (no parent, or pdata's invalid all-zero id) has ParentSpanId ''.
    return columns._string_column([parent.hex() if parent and parent != _ZERO_SPAN_ID else "" for parent in parents])


def _check(trace_ids: list[bytes], span_ids: list[bytes], parents: list[bytes], times: list[int]) -> None:
    """``_NeedsSpans`` unless ``otlp`` accepts every span (C-level passes over the columns)."""
    if (set(map(len, trace_ids)) != {16} or set(map(len, span_ids)) != {8} or not set(map(len, parents)) <= {0, 8}
            or _ZERO_TRACE_ID in trace_ids or _ZERO_SPAN_ID in span_ids):
        raise _NeedsSpans
    # Timestamps are stored as DateTime64(9): signed 64-bit nanoseconds.
    if times and max(times) > otlp._MAX_TIME:
        raise _NeedsSpans


def encode_request(request: ExportTraceServiceRequest, body: bytes | None = None) -> EncodedRequest:
    """The request's valid spans as one Native block (``columns.INSERT_COLUMNS``), and what was rejected.

    ``body``: the protobuf bytes ``request`` was parsed from, when there are some (it saves
    serializing the request again; a body that is not canonical protobuf takes the per-span path).
    """
    canonical = request.SerializeToString()
    try:
        if body is not None and body != canonical:
            raise _NeedsSpans
        return _encode_columns(_RequestColumns.FromString(canonical))
    except _NeedsSpans:
        decoded = otlp._spans_of(request)
        batch = columns.encode_spans(decoded.spans) if decoded.spans else EncodedBatch(b"", 0)
        return EncodedRequest(batch, decoded.rejected, decoded.error_message)


def _encode_columns(request: Any) -> EncodedRequest:
    rows_read = _span_rows(request)
    spans = rows_read.spans
    rows = len(spans)
    if not rows:
        return EncodedRequest(EncodedBatch(b"", 0), 0, "")
    trace_ids = list(map(_TRACE_ID, spans))
    span_ids = list(map(_SPAN_ID, spans))
    parents = list(map(_PARENT_SPAN_ID, spans))
    starts = list(map(_START, spans))
    ends = list(map(_END, spans))
    event_lists = list(map(_EVENTS, spans))
    events = list(chain.from_iterable(event_lists))
    event_times = list(map(_TIME, events))
    _check(trace_ids, span_ids, parents, [*starts, *ends, *event_times])
    # Everything read before anything is written: a reason for the per-span path found late
    # must not leave half a block.
    attributes = _maps(spans)
    event_attributes = _maps(events)
    statuses = list(map(_STATUSES.__getitem__, map(_STATUS, spans)))
    link_lists = list(map(_LINKS, spans))
    links: list[Sequence[Any]] = [()] * rows
    if any(link_lists):
        # Links are rare: read as otlp reads them (attribute dicts and all) and written by columns.
        states: dict[str, Any] = {}
        for position, span_links in enumerate(link_lists):
            if span_links:
                links[position] = [otlp._link(Span.Link.FromString(raw), states) for raw in span_links]

    out: list[bytes] = [columns._leb128(len(INSERT_COLUMNS)), columns._leb128(rows)]
    names = iter(INSERT_COLUMNS)

    def header() -> None:
        # As columns.encode_spans writes each column's name and type.
        name, type_name = next(names)
        columns._column_header(name, type_name, out)
        if "LowCardinality" in type_name:
            out.append(columns._LOW_CARDINALITY_VERSION)

    header()
    out.append(columns._little_endian("q", starts))
    header()
    out.append(_id_column(trace_ids, 16))
    header()
    out.append(_id_column(span_ids, 8))
    header()
    out.append(_parent_column(parents))
    header()
    out.append(columns._repeating_string_column(map(_TRACE_STATE, spans)))
    header()
    columns._low_cardinality_column(map(_NAME, spans), out)
    header()
    columns._low_cardinality_column(map(_KIND_NAMES.get, map(_KIND, spans), repeat("Unspecified", rows)), out)
    columns._resource_and_scope_columns(rows_read, out, header)  # type: ignore[arg-type]  # reads .resources, .scopes
    header()
    attributes.encode(out)
    header()
    out.append(columns._little_endian("Q", columns._durations(starts, ends)))
    header()
    columns._low_cardinality_column(map(_FIRST_BYTE, statuses), out)
    header()
    messages = list(map(_SECOND, statuses))
    out.append(columns._string_column(messages) if any(messages) else b"\x00" * rows)

    # columns._event_columns, from the lists read above.
    offsets = columns._offsets(map(len, event_lists))
    header()
    out.append(offsets)
    out.append(columns._little_endian("q", event_times))
    header()
    out.append(offsets)
    columns._low_cardinality_column(map(_NAME, events), out)
    header()
    out.append(offsets)
    event_attributes.encode(out)

    _link_columns(links, out, header)
    return EncodedRequest(EncodedBatch(b"".join(out), rows), 0, "")


def _link_columns(links: list[Sequence[Any]], out: list[bytes], header: Callable[[], None]) -> None:
    """What ``columns._link_columns`` writes for otlp's links."""
    offsets = columns._offsets(map(len, links))
    flat = list(chain.from_iterable(links))
    contexts = [link.context for link in flat]
    trace_ids, span_ids = [context.trace_id for context in contexts], [context.span_id for context in contexts]
    for ids, digits in ((trace_ids, 32), (span_ids, 16)):
        header()
        out.append(offsets)
        out.append(columns._hex_id_column(ids, digits))
    header()
    out.append(offsets)
    out.append(columns._repeating_string_column(context.trace_state.to_header() if context.trace_state else ""
                                                for context in contexts))
    header()
    out.append(offsets)
    _link_maps([link.attributes for link in flat]).encode(out)


_SECOND = itemgetter(1)
