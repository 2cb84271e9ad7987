"""Span processors for the OpenTelemetry SDK (imported only where the SDK is installed).

``ContextSpanProcessor`` puts the attributes of the enclosing ``context(...)`` on every span as
it starts. It sits in a provider's span path only while some ``context(...)`` is alive anywhere
in the process (a ``with`` block, or a task or thread that copied the OpenTelemetry context of
one): entering a context puts it in, and once ``STEP_OUT_AFTER`` spans have started with no
context alive it takes itself out again. Spans started outside any context therefore cost
nothing for it — the SDK calls only the processors in its tuple, and ours is not there. (Stepping
in and out costs ~22,000 instructions a round; waiting for a few spans first keeps an app that
alternates contexts and lone spans from paying it on every request.)
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import ProxyTracerProvider

from llmtel.instrumentation.api import CONTEXT_ATTRIBUTES_KEY, ContextSpans
from llmtel.instrumentation.settings import Settings
from llmtel.instrumentation.summary import summary_processor_if_enabled

__all__ = ["ContextSpanProcessor", "add_context_processor", "add_llmtel_processors"]


# Spans started with no context alive before the processor leaves the span path.
STEP_OUT_AFTER = 32


class ContextSpanProcessor(SpanProcessor):
    """Sets the enclosing ``context(...)``'s attributes on each span as it starts."""

    spans_outside = 0  # started with no context alive since the processor last stepped in

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        attrs = (parent_context if parent_context is not None else otel_context.get_current()).get(
            CONTEXT_ATTRIBUTES_KEY
        )
        if attrs:
            span.set_attributes(attrs)
        elif not ContextSpans.live:
            self.spans_outside += 1  # a lost update between threads only delays the step out
            if self.spans_outside >= STEP_OUT_AFTER:
                _step_out()

    def _on_ending(self, span: Any) -> None:
        return None

    def on_end(self, span: Any) -> None:
        return None


class _Switch:
    """Puts one provider's ContextSpanProcessor in its span path, first, or takes it out.

    The SDK's multi span processors keep their processors in a tuple they replace under their
    lock (``add_span_processor``) and iterate without one, so replacing it here is as safe as
    adding a processor is. First: every other processor's ``on_start`` sees the attributes.
    """

    def __init__(self, multi: Any, processor: ContextSpanProcessor) -> None:
        self.multi = multi
        self.processor = processor

    def put(self, present: bool) -> None:
        processor = self.processor
        with self.multi._lock:
            current = self.multi._span_processors
            if present:
                processor.spans_outside = 0
                if processor not in current:
                    self.multi._span_processors = (processor, *current)
            elif processor in current:
                self.multi._span_processors = tuple(p for p in current if p is not processor)


_SWITCHES: list[_Switch] = []
_LOCK = threading.Lock()


def _switchable(multi: Any) -> bool:
    return isinstance(getattr(multi, "_span_processors", None), tuple) and hasattr(multi, "_lock")


def add_context_processor(tracer_provider: Any) -> None:
    """Give an SDK tracer provider the ContextSpanProcessor (idempotent).

    ``context(...)`` does this for the provider the instrumentor uses (or the global one); call it
    for other providers you build. A provider whose span path cannot be switched (not the SDK's
    multi span processor) keeps the processor for good.
    """
    if not hasattr(tracer_provider, "add_span_processor") or getattr(tracer_provider, "_llmtel_context", False):
        return
    multi = getattr(tracer_provider, "_active_span_processor", None)
    with _LOCK:
        if _switchable(multi):
            switch = _Switch(multi, ContextSpanProcessor())
            _SWITCHES.append(switch)
            if ContextSpans.installed:
                switch.put(True)
        else:
            tracer_provider.add_span_processor(ContextSpanProcessor())
        tracer_provider._llmtel_context = True


def step_in(tracer_provider: Any) -> None:
    """A context was entered while the processors were out: put them back (the provider's too).

    While the global provider is still the API's proxy (the app has not set one yet) and no
    provider has a switch, the next context entry tries again; with switches, the next step in
    after a step out does.
    """
    add_context_processor(tracer_provider)
    with _LOCK:
        for switch in _SWITCHES:
            switch.put(True)
        ContextSpans.installed = bool(_SWITCHES) or not isinstance(tracer_provider, ProxyTracerProvider)


def _step_out() -> None:
    """No context is alive: take the processors out of the span paths.

    A context entered meanwhile either saw ``installed`` still True — then the second look at
    ``live`` below sees it and the processors go back — or sees False and calls ``step_in``.
    """
    with _LOCK:
        if ContextSpans.live or not ContextSpans.installed:
            return
        ContextSpans.installed = False
        for switch in _SWITCHES:
            switch.put(False)
        if ContextSpans.live:
            for switch in _SWITCHES:
                switch.put(True)
            ContextSpans.installed = True


def add_llmtel_processors(tracer_provider: Any, settings: Settings | None = None) -> None:
    """Add the processors llmtel needs from the start (the console summary, when enabled), once."""
    if not hasattr(tracer_provider, "add_span_processor") or getattr(tracer_provider, "_llmtel_processors", False):
        return
    summary = summary_processor_if_enabled(settings) if settings is not None else None
    if summary is not None:
        tracer_provider.add_span_processor(summary)
    tracer_provider._llmtel_processors = True
