"""In-memory OpenTelemetry providers for tests: spans, metrics and log events a test can read.

``TelemetryCapture.instrument(**env)`` (re)instruments the openai client with settings taken
from ``env`` (the instrumentor reads its settings at ``instrument()`` time), so one test can
turn content capture on without touching the others.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtel.instrumentation import OpenAIInstrumentor


class EndCounter(SpanProcessor):
    """Counts how often each span ends; a span must end exactly once."""

    def __init__(self) -> None:
        self.ends: Counter[int] = Counter()

    def on_end(self, span: ReadableSpan) -> None:
        self.ends[span.context.span_id] += 1


class TelemetryCapture:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.end_counter = EndCounter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer_provider.add_span_processor(self.end_counter)
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.logs = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.instrumentor = OpenAIInstrumentor()

    @contextmanager
    def instrumented(self, **env: str) -> Iterator[TelemetryCapture]:
        """Instrument with these environment variables set; uninstrument afterwards."""
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            self.instrumentor.instrument(
                tracer_provider=self.tracer_provider,
                meter_provider=self.meter_provider,
                logger_provider=self.logger_provider,
            )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        try:
            yield self
        finally:
            self.instrumentor.uninstrument()

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def llm_spans(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.attributes and "gen_ai.operation.name" in s.attributes]

    def only_span(self) -> ReadableSpan:
        spans = self.llm_spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def metric_points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend((metric, p) for p in metric.data.data_points)
        return points


def by_name(capture: TelemetryCapture) -> dict[str, list[ReadableSpan]]:
    """The finished spans grouped by name, in end order."""
    spans: dict[str, list[ReadableSpan]] = {}
    for span in capture.finished():
        spans.setdefault(span.name, []).append(span)
    return spans


def parent_name(capture: TelemetryCapture, span: ReadableSpan) -> str | None:
    """The name of ``span``'s parent among the finished spans (None for a root, "?" if not found)."""
    if span.parent is None:
        return None
    for other in capture.finished():
        if other.context.span_id == span.parent.span_id:
            return other.name
    return "?"
