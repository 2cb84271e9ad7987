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

    Added to the tracer provider on the first ``context(...)``; from then on a span started
    outside any context costs one context lookup (and the SDK's calls into this processor).
    """

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        attrs = (parent_context if parent_context is not None else otel_context.get_current()).get(
            CONTEXT_ATTRIBUTES_KEY
        )
        if attrs:
            span.set_attributes(attrs)

    def _on_ending(self, span: Any) -> None:
        return None

    def on_end(self, span: Any) -> None:
        return None


def add_context_processor(tracer_provider: Any) -> None:
    """Add the ContextSpanProcessor to an SDK tracer provider, once."""
    if hasattr(tracer_provider, "add_span_processor") and not getattr(tracer_provider, "_llmtel_context", False):
        tracer_provider.add_span_processor(ContextSpanProcessor())
        tracer_provider._llmtel_context = True


def add_llmtel_processors(tracer_provider: Any, settings: Settings | None = None) -> None:
    """Add the processors llmtel needs from the start (the console summary, when enabled), once."""
    if not hasattr(tracer_provider, "add_span_processor") or getattr(tracer_provider, "_llmtel_processors", False):
        return
    summary = summary_processor_if_enabled(settings) if settings is not None else None
    if summary is not None:
        tracer_provider.add_span_processor(summary)
    tracer_provider._llmtel_processors = True
