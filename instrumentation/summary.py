"""A per-request summary on the console: one compact block each time a root span ends.

Opt-in with ``OTEL_INSTRUMENTATION_LLMTEL_CONSOLE_SUMMARY=true`` (the openai instrumentor then
adds :class:`ConsoleSummaryProcessor` to the SDK tracer provider), or by hand::

    from opentelemetry.sdk.trace import TracerProvider
    from llmtel.instrumentation.summary import ConsoleSummaryProcessor

    provider = TracerProvider()
    provider.add_span_processor(ConsoleSummaryProcessor())   # stderr; pass stream= to redirect

which prints, when ``invoke_workflow support-request`` ends::

    llmtel ▸ invoke_workflow support-request  trace 4bf92f3577b34da6a3ce929d0e0e4736  1.84 s
      LLM     5 calls  tokens 1,204 in / 310 out  cost $0.00042
      agents  triage ×1 (620 ms)  writer ×1 (1.10 s)
      tools   lookup_order ×2 (10 ms)
      errors  chat gpt-4o-mini: BadRequestError

Children end before their root, so the processor adds each span's numbers to its trace's totals
in ``on_end`` and prints (then forgets) the totals when the root ends: a span with no parent or a
remote one. It keeps numbers, never spans, for at most ``max_open_traces`` traces at a time.
Traces with no GenAI span in them (a health check under an HTTP server span) print nothing.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

from llmtel.instrumentation import semconv as sc
from llmtel.instrumentation.settings import Settings

_logger = logging.getLogger(__name__)

DEFAULT_MAX_OPEN_TRACES = 10_000
# Per trace: how many agent or tool names, and how many errors, are remembered by name.
_MAX_NAMES = 64
_MAX_ERRORS_LISTED = 3
# Per line: how many agents, tools or errors are printed before "+N more".
_MAX_SHOWN = 6
_OTHER = "(other)"

_NOT_MODEL_CALLS = frozenset({sc.OP_EXECUTE_TOOL, sc.OP_INVOKE_AGENT, sc.OP_INVOKE_WORKFLOW})
_EMPTY: Mapping[str, Any] = {}

_BOLD, _RED, _DIM, _RESET = "\x1b[1m", "\x1b[31m", "\x1b[2m", "\x1b[0m"


class TraceTotals:
    """The numbers of one trace's finished spans so far."""

    __slots__ = (
        "genai", "llm_calls", "input_tokens", "output_tokens", "cost", "priced_calls", "unpriced_calls",
        "agents", "tools", "errors", "error_count", "_failed_parents",
    )

    def __init__(self) -> None:
        self.genai = False  # any span with gen_ai.operation.name
        self.llm_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.priced_calls = 0
        self.unpriced_calls = 0  # succeeded without a cost: a model missing from the price table
        self.agents: dict[str, list[int]] = {}  # name -> [calls, total duration in ns]
        self.tools: dict[str, list[int]] = {}
        self.errors: list[tuple[str, str]] = []  # (span name, error type), where each error started
        self.error_count = 0
        # span id -> error type of a failed child: the same error on the parent is that error
        # propagating up, not a new one, and is not listed again.
        self._failed_parents: dict[int, str] = {}

    def add(self, span: ReadableSpan, is_root: bool) -> None:
        attributes = span.attributes or _EMPTY
        operation = attributes.get(sc.GEN_AI_OPERATION_NAME)
        failed = span.status.status_code is StatusCode.ERROR
        if operation is not None:
            self.genai = True
            if operation == sc.OP_INVOKE_AGENT:
                _add_call(self.agents, attributes.get(sc.GEN_AI_AGENT_NAME) or span.name, _duration_ns(span))
            elif operation == sc.OP_EXECUTE_TOOL:
                _add_call(self.tools, attributes.get(sc.GEN_AI_TOOL_NAME) or span.name, _duration_ns(span))
            elif operation not in _NOT_MODEL_CALLS:
                self._add_model_call(attributes, failed)
        if failed:
            self._add_error(span, attributes, is_root)

    def _add_model_call(self, attributes: Mapping[str, Any], failed: bool) -> None:
        self.llm_calls += 1
        self.input_tokens += attributes.get(sc.GEN_AI_USAGE_INPUT_TOKENS) or 0
        self.output_tokens += attributes.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS) or 0
        cost = attributes.get(sc.GEN_AI_USAGE_COST)
        if cost is not None:
            self.cost += cost
            self.priced_calls += 1
        elif not failed:
            # A failed call reports no usage and is (for 4xx, 5xx) not billed; it lowers no bound.
            self.unpriced_calls += 1

    def _add_error(self, span: ReadableSpan, attributes: Mapping[str, Any], is_root: bool) -> None:
        error_type = str(attributes.get(sc.ERROR_TYPE) or span.status.description or "error")[:80]
        propagated = self._failed_parents.pop(span.context.span_id, None) == error_type
        if not is_root and len(self._failed_parents) < _MAX_NAMES:
            self._failed_parents[span.parent.span_id] = error_type  # type: ignore[union-attr]
        if propagated:
            return
        self.error_count += 1
        if len(self.errors) < _MAX_ERRORS_LISTED:
            self.errors.append((span.name, error_type))


def _add_call(calls: dict[str, list[int]], name: Any, duration_ns: int) -> None:
    key = str(name)
    entry = calls.get(key)
    if entry is None:
        if len(calls) >= _MAX_NAMES:
            key = _OTHER
            entry = calls.get(key)
        if entry is None:
            entry = calls[key] = [0, 0]
    entry[0] += 1
    entry[1] += duration_ns


def _duration_ns(span: ReadableSpan) -> int:
    if span.start_time is None or span.end_time is None:
        return 0
    return span.end_time - span.start_time


class ConsoleSummaryProcessor(SpanProcessor):
    """Prints one summary block per request (root span) to ``stream`` (default: ``sys.stderr``).

    Colors only when the stream is a terminal. Never raises: a failure is logged once at debug.
    """

    def __init__(self, stream: TextIO | None = None, max_open_traces: int = DEFAULT_MAX_OPEN_TRACES) -> None:
        self._stream = stream
        self._max_open_traces = max(1, max_open_traces)
        self._traces: OrderedDict[int, TraceTotals] = OrderedDict()
        self._lock = threading.Lock()
        self._failure_logged = False

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._on_end(span)
        except Exception:  # noqa: BLE001 - a summary must never break the app's spans
            if not self._failure_logged:
                self._failure_logged = True
                _logger.debug("llmtel: console summary failed", exc_info=True)

    def _on_end(self, span: ReadableSpan) -> None:
        parent = span.parent
        is_root = parent is None or parent.is_remote
        if not is_root:
            # Most spans of an app are neither GenAI nor failed: one lookup and out, no lock.
            attributes = span.attributes
            if (not attributes or sc.GEN_AI_OPERATION_NAME not in attributes) and \
                    span.status.status_code is not StatusCode.ERROR:
                return
        trace_id = span.context.trace_id
        with self._lock:
            traces = self._traces
            totals = traces.pop(trace_id, None) if is_root else traces.get(trace_id)
            if totals is None:
                totals = TraceTotals()
                if not is_root:
                    traces[trace_id] = totals
                    if len(traces) > self._max_open_traces:
                        # The oldest trace's root never ended here (or ended before its children).
                        traces.popitem(last=False)
            totals.add(span, is_root)
        if is_root and totals.genai:
            self._print(format_summary(span.name, trace_id, _duration_ns(span), totals, self._use_color()))

    def _use_color(self) -> bool:
        stream = self._stream or sys.stderr
        try:
            return bool(stream.isatty())
        except Exception:  # noqa: BLE001 - a stream without isatty (or a closed one)
            return False

    def _print(self, text: str) -> None:
        stream = self._stream or sys.stderr  # looked up late: tests and apps replace sys.stderr
        stream.write(text)  # one write per block, so blocks of concurrent requests don't interleave
        stream.flush()

    def shutdown(self) -> None:
        with self._lock:
            self._traces.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def summary_processor_if_enabled(settings: Settings) -> SpanProcessor | None:
    """A :class:`ConsoleSummaryProcessor` when the console summary is turned on, else None."""
    return ConsoleSummaryProcessor() if settings.console_summary else None


# ---------------------------------------------------------------------------------------
# Formatting (pure)


def format_summary(root_name: str, trace_id: int, duration_ns: int, totals: TraceTotals, color: bool = False) -> str:
    """The block printed for one request, ending in a newline."""
    bold, red, dim, reset = (_BOLD, _RED, _DIM, _RESET) if color else ("", "", "", "")
    lines = [
        f"{bold}llmtel ▸ {root_name}{reset}  {dim}trace {trace_id:032x}{reset}  {format_seconds(duration_ns / 1e9)}",
        f"  LLM     {totals.llm_calls} call{'' if totals.llm_calls == 1 else 's'}"
        f"  tokens {totals.input_tokens:,} in / {totals.output_tokens:,} out  cost {_format_cost(totals)}",
    ]
    if totals.agents:
        lines.append("  agents  " + _format_calls(totals.agents))
    if totals.tools:
        lines.append("  tools   " + _format_calls(totals.tools))
    if totals.error_count:
        listed = [f"{name}: {error_type}" for name, error_type in totals.errors]
        more = totals.error_count - len(listed)
        lines.append(f"  {red}errors  " + "  ".join(listed) + (f"  +{more} more" if more else "") + reset)
    return "\n".join(lines) + "\n"


def _format_calls(calls: dict[str, list[int]]) -> str:
    shown = [f"{name} ×{count} ({format_seconds(total_ns / 1e9)})"
             for name, (count, total_ns) in list(calls.items())[:_MAX_SHOWN]]
    more = len(calls) - len(shown)
    return "  ".join(shown) + (f"  +{more} more" if more else "")


def _format_cost(totals: TraceTotals) -> str:
    if not totals.priced_calls:
        return "n/a"
    if totals.unpriced_calls:
        unpriced = totals.unpriced_calls
        return f"≥ {format_usd(totals.cost)} ({unpriced} call{'' if unpriced == 1 else 's'} unpriced)"
    return format_usd(totals.cost)


def format_usd(amount: float) -> str:
    """Dollars to cents above $1, three significant digits below: LLM calls cost fractions of a cent."""
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount <= 0:
        return "$0"
    decimals = 2 - math.floor(math.log10(amount))
    return "$" + f"{amount:.{decimals}f}".rstrip("0").rstrip(".")


def format_seconds(seconds: float) -> str:
    # Thresholds sit where rounding would carry over: 0.9996 s reads "1.00 s", not "1000 ms".
    if seconds >= 99.995:
        return f"{seconds:.0f} s"
    if seconds >= 0.9995:
        return f"{seconds:.2f} s"
    if seconds >= 0.0005:
        return f"{seconds * 1000:.0f} ms"
    return "<1 ms"
