"""Span processors for the OpenTelemetry SDK (imported only where the SDK is installed)."""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import SpanProcessor

from llmtel.instrumentation.api import CONTEXT_ATTRIBUTES_KEY
from llmtel.instrumentation.settings import Settings
from llmtel.instrumentation.summary import summary_processor_if_enabled


class ContextSpanProcessor(SpanProcessor):
    """Puts the attributes of the enclosing ``context(...)`` on every span as it starts.

    Spans started outside any ``context`` cost one context lookup.
    """

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        attrs = otel_context.get_value(CONTEXT_ATTRIBUTES_KEY, parent_context)
        if attrs:
            span.set_attributes(attrs)


def add_llmtel_processors(tracer_provider: Any, settings: Settings | None = None) -> None:
    """Add llmtel's processors to an SDK tracer provider once; anything else is left alone."""
    if not hasattr(tracer_provider, "add_span_processor") or getattr(tracer_provider, "_llmtel_processors", False):
        return
    tracer_provider.add_span_processor(ContextSpanProcessor())
    summary = summary_processor_if_enabled(settings) if settings is not None else None
    if summary is not None:
        tracer_provider.add_span_processor(summary)
    tracer_provider._llmtel_processors = True
