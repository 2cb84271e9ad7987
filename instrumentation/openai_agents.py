"""Bring the OpenAI Agents SDK's runs into the same span tree as the openai client's LLM calls.

Usage::

    # no code change: opentelemetry-instrument loads it (entry point ``llmtel_openai_agents``)
    opentelemetry-instrument python app.py

    # or by hand, next to the openai client instrumentation
    from llmtel.instrumentation import OpenAIInstrumentor
    from llmtel.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    OpenAIAgentsInstrumentor().instrument()

The SDK reports its traces and spans to tracing processors. Ours is *added* beside the SDK's
own (``agents.add_trace_processor``), so the SDK's export to the OpenAI dashboard keeps
working; the SDK has no way to remove a processor, so ``uninstrument()`` leaves ours
registered and inert. What becomes a span:

=====================  ===============================================================
SDK trace / span data  OpenTelemetry span (all INTERNAL)
=====================  ===============================================================
trace                  ``invoke_workflow {trace name}``: the root unless a span is active
AgentSpanData          ``invoke_agent {name}`` with ``llmtel.agent.*`` totals
FunctionSpanData       ``execute_tool {name}`` with ``gen_ai.tool.call.id``
HandoffSpanData        ``handoff {from agent} -> {to agent}``
GuardrailSpanData      ``guardrail {name}`` with ``llmtel.guardrail.triggered``
CustomSpanData         ``{name}``
MCPListToolsSpanData   ``mcp_list_tools {server}``
=====================  ===============================================================

Generation and Response spans are skipped: the openai client instrumentation already makes
one ``chat {model}`` span per request, and it nests under the agent span because each
span above is made current (its context attached) for the code that runs inside it. The
SDK's task and turn spans and its voice spans are skipped too; their children hang from
the nearest span we did make. Spans go to the tracer provider the ``OpenAIInstrumentor``
was given (the one ``workflow``/``agent``/``tool`` use), else to the global one.

One limit: a span the SDK starts *without* marking it current (``span.start()``, as some
extensions do) and finishes from another asyncio task leaves its context attached in the
task that started it until that task's next SDK event or the end of the trace; LLM calls
made there in between still hang from it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection
from contextvars import Token
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmtel.instrumentation import api
from llmtel.instrumentation import semconv as sc
from llmtel.instrumentation.content import truncate

_logger = logging.getLogger("llmtel.instrumentation")

_instruments = ("openai-agents >= 0.1",)


# Which SDK trace or span an attached context belongs to. A child whose context drifted away
# from the SDK's own idea of the current span (its parent_id) is re-parented through this.
_SDK_KEY = otel_context.create_key("llmtel-openai-agents-span")

# Errors on skipped structural spans (a turn, the run's task) belong to the agent or workflow
# around them; errors on the skipped model spans are already on the client's LLM span.
_FORWARD_ERRORS_FROM = frozenset({"task", "turn"})


class _Open:
    """One SDK trace or span with a live OpenTelemetry span, and the context attached for it."""

    __slots__ = ("kind", "trace_id", "scope", "entered", "ctx", "token", "owner", "error")

    def __init__(self, kind: str, trace_id: str, scope: Any, entered: tuple[Any, ...],
                 ctx: otel_context.Context) -> None:
        self.kind = kind
        self.trace_id = trace_id
        self.scope = scope  # an api scope (workflow, agent, tool) or None for a plain span
        self.entered = entered  # what scope._enter returned: (context, span, ...)
        self.ctx = ctx
        self.token: Token[otel_context.Context] | None = None
        self.owner: tuple[int, Any] | None = None
        self.error: Any = None  # a SpanError forwarded from a skipped child

    @property
    def span(self) -> trace.Span:
        return self.entered[1]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# Span data → span: how each kind starts (before the SDK fills it in) and what it adds at the end.


def _start_agent(data: Any, parent: otel_context.Context) -> tuple[Any, tuple[Any, ...]]:
    scope = api.agent(str(data.name))
    return scope, scope._enter(parent, None)


def _end_agent(record: _Open, data: Any) -> tuple[dict[str, Any], Any]:
    # The runner fills the lists in after the span has started.
    attrs: dict[str, Any] = {}
    if data.tools:
        attrs[sc.LLMTEL_AGENT_TOOLS] = [str(name) for name in data.tools]
    if data.handoffs:
        attrs[sc.LLMTEL_AGENT_HANDOFFS] = [str(name) for name in data.handoffs]
    return attrs, None


def _start_function(data: Any, parent: otel_context.Context) -> tuple[Any, tuple[Any, ...]]:
    # tool() takes the gen_ai.tool.call.id the LLM asked for from the agent's scope.
    scope = api.tool(str(data.name))
    return scope, scope._enter(parent, None)


def _end_function(record: _Open, data: Any) -> tuple[dict[str, Any], Any]:
    settings = record.entered[2]
    if not settings.capture_content:
        return {}, None
    attrs: dict[str, Any] = {}
    if data.input:  # set by the SDK after the span started, only with trace_include_sensitive_data
        attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = truncate(str(data.input), settings.content_max_length)
    return attrs, data.output  # tool's _exit records the result under content capture


def _start_handoff(data: Any, parent: otel_context.Context) -> tuple[Any, tuple[Any, ...]]:
    if not data.from_agent:
        return None, _start_plain("handoff", {}, parent)
    attrs = {sc.LLMTEL_HANDOFF_FROM_AGENT: str(data.from_agent)}
    return None, _start_plain(f"handoff {data.from_agent}", attrs, parent)


def _end_handoff(record: _Open, data: Any) -> tuple[dict[str, Any], Any]:
    if not data.to_agent:  # known only once the handoff has run
        return {}, None
    source = f"{data.from_agent} " if data.from_agent else ""
    record.span.update_name(f"handoff {source}-> {data.to_agent}")
    return {sc.LLMTEL_HANDOFF_TO_AGENT: str(data.to_agent)}, None


def _start_guardrail(data: Any, parent: otel_context.Context) -> tuple[Any, tuple[Any, ...]]:
    return None, _start_plain(f"guardrail {data.name}", {sc.LLMTEL_GUARDRAIL_NAME: str(data.name)}, parent)


def _end_guardrail(record: _Open, data: Any) -> tuple[dict[str, Any], Any]:
    return {sc.LLMTEL_GUARDRAIL_TRIGGERED: bool(data.triggered)}, None


def _start_custom(data: Any, parent: otel_context.Context) -> tuple[Any, tuple[Any, ...]]:
    return None, _start_plain(str(data.name), {}, parent)


def _start_mcp_tools(data: Any, parent: otel_context.Context) -> tuple[Any, tuple[Any, ...]]:
    name = f"mcp_list_tools {data.server}" if data.server else "mcp_list_tools"
    return None, _start_plain(name, {}, parent)


def _end_nothing(record: _Open, data: Any) -> tuple[dict[str, Any], Any]:
    return {}, None


_Start = Callable[[Any, otel_context.Context], tuple[Any, tuple[Any, ...]]]
_End = Callable[[_Open, Any], tuple[dict[str, Any], Any]]

# By `span_data.type`. Types not listed (generation, response, task, turn, transcription,
# speech, speech_group, and any the SDK adds later) make no span.
_KINDS: dict[str, tuple[_Start, _End]] = {
    "agent": (_start_agent, _end_agent),
    "function": (_start_function, _end_function),
    "handoff": (_start_handoff, _end_handoff),
    "guardrail": (_start_guardrail, _end_guardrail),
    "custom": (_start_custom, _end_nothing),
    "mcp_tools": (_start_mcp_tools, _end_nothing),
}


def _start_plain(name: str, attrs: dict[str, Any], parent: otel_context.Context) -> tuple[Any, ...]:
    span = api._tracer().start_span(name, context=parent, kind=SpanKind.INTERNAL, attributes=attrs)
    return trace.set_span_in_context(span, parent), span


def _record_sdk_error(span: trace.Span, error: Any) -> None:
    """An SDK ``SpanError``: its message is a short fixed phrase ("Error running tool"), the detail is in data."""
    message = str(error.get("message") or "error")
    data = error.get("data")
    detail = data.get("error") if isinstance(data, dict) else None
    span.set_attribute(sc.ERROR_TYPE, message[:200])
    span.set_status(Status(StatusCode.ERROR, (f"{message}: {detail}" if detail else message)[:1000]))


def _owner() -> tuple[int, Any]:
    """The thread and asyncio task running now: a context token can only be reset where it was set."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop in this thread
        task = None
    return threading.get_ident(), task


# ---------------------------------------------------------------------------------------
# The processor


class AgentsTraceProcessor:
    """An ``agents`` tracing processor that mirrors the SDK's traces and spans as OpenTelemetry spans.

    The SDK calls ``on_span_start`` just before it marks a span current in its own ContextVar,
    and ``on_span_end`` just before it resets that ContextVar, both in the same context. We
    attach the span's OpenTelemetry context at start and detach it at end, so the two stay in
    step; when an end comes from another task or thread (a span finished without
    ``reset_current``), the detach is left for later rather than done with a foreign token.
    Nothing here raises into the SDK or the app.
    """

    def __init__(self) -> None:
        self.enabled = True
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        # Skipped SDK span id -> (trace id, its kind, key of the nearest open ancestor or None).
        self._skipped: dict[str, tuple[str, str, str | None]] = {}
        # Ended, but their context is still attached where they started: detached once it is current again.
        self._stale: dict[str, _Open] = {}

    # -- TracingProcessor ------------------------------------------------------------

    def on_trace_start(self, sdk_trace: Any) -> None:
        if not self.enabled or not is_instrumentation_enabled():
            return
        try:
            self._detach_stale()
            scope = api.workflow(str(sdk_trace.name))
            entered = scope._enter(otel_context.get_current(), None)
            group_id = getattr(sdk_trace, "group_id", None)
            if group_id:  # "a chat thread id", in the SDK's words
                entered[1].set_attribute(sc.GEN_AI_CONVERSATION_ID, str(group_id))
            self._open_and_attach(sdk_trace.trace_id, "trace", sdk_trace.trace_id, scope, entered)
        except Exception:  # noqa: BLE001
            _logger.debug("llmtel: could not start the span of an openai-agents trace", exc_info=True)

    def on_trace_end(self, sdk_trace: Any) -> None:
        try:
            self._detach_stale()
            trace_id = sdk_trace.trace_id
            with self._lock:
                record = self._open.pop(trace_id, None)
                # Spans the SDK never finished (an abandoned stream) end with their trace.
                leftover = [(key, r) for key, r in self._open.items() if r.trace_id == trace_id]
                for key, _ in leftover:
                    del self._open[key]
                for key in [k for k, entry in self._skipped.items() if entry[0] == trace_id]:
                    del self._skipped[key]
            for key, r in reversed(leftover):
                self._close(key, r, {}, None, None)
            if record is not None:
                self._close(trace_id, record, {}, None, None)
            with self._lock:  # contexts that never became current again are gone with their task
                for key in [k for k, r in self._stale.items() if r.trace_id == trace_id]:
                    del self._stale[key]
        except Exception:  # noqa: BLE001
            _logger.debug("llmtel: could not end the span of an openai-agents trace", exc_info=True)

    def on_span_start(self, span: Any) -> None:
        if not self.enabled or not is_instrumentation_enabled():
            return
        try:
            self._detach_stale()
            data = span.span_data
            kind = data.type
            parent_key = self._open_ancestor(span.parent_id or span.trace_id)
            handlers = _KINDS.get(kind)
            if handlers is None:
                with self._lock:
                    self._skipped[span.span_id] = (span.trace_id, kind, parent_key)
                return
            scope, entered = handlers[0](data, self._parent_context(parent_key))
            self._open_and_attach(span.span_id, kind, span.trace_id, scope, entered)
        except Exception:  # noqa: BLE001
            _logger.debug("llmtel: could not start the span of an openai-agents span", exc_info=True)

    def on_span_end(self, span: Any) -> None:
        try:
            self._detach_stale()
            with self._lock:
                record = self._open.pop(span.span_id, None)
                skipped = self._skipped.pop(span.span_id, None) if record is None else None
            if record is None:
                if skipped is not None and span.error and skipped[1] in _FORWARD_ERRORS_FROM:
                    self._forward_error(skipped[2], span.error)
                return
            try:
                attrs, result = _KINDS[record.kind][1](record, span.span_data)
            except Exception:  # noqa: BLE001
                _logger.debug("llmtel: could not read an openai-agents span", exc_info=True)
                attrs, result = {}, None
            self._close(span.span_id, record, attrs, result, span.error)
        except Exception:  # noqa: BLE001
            _logger.debug("llmtel: could not end the span of an openai-agents span", exc_info=True)

    def shutdown(self) -> None:
        """Nothing to flush: the spans belong to the OpenTelemetry tracer provider."""

    def force_flush(self) -> None:
        """Nothing to flush: the spans belong to the OpenTelemetry tracer provider."""

    # -- parents and contexts --------------------------------------------------------

    def _open_ancestor(self, key: str | None) -> str | None:
        """``key`` if its span is open, else the open ancestor a skipped span recorded, else None."""
        if key is None or key in self._open:
            return key
        skipped = self._skipped.get(key)
        return skipped[2] if skipped is not None else None

    def _parent_context(self, parent_key: str | None) -> otel_context.Context:
        """The current context when it belongs to the SDK parent (it may hold the app's own spans
        below it), else the parent's context: a span started where our context did not follow."""
        current = otel_context.get_current()
        if parent_key is None or otel_context.get_value(_SDK_KEY, current) == parent_key:
            return current
        record = self._open.get(parent_key)
        return record.ctx if record is not None else current

    def _open_and_attach(self, key: str, kind: str, trace_id: str, scope: Any, entered: tuple[Any, ...]) -> None:
        ctx = otel_context.set_value(_SDK_KEY, key, entered[0])
        record = _Open(kind, trace_id, scope, entered, ctx)
        with self._lock:
            self._open[key] = record
        record.owner = _owner()
        record.token = otel_context.attach(ctx)

    def _detach(self, record: _Open) -> bool:
        """Detach the record's context if it is the current one, here where it was attached."""
        token = record.token
        if token is None:
            return True
        if otel_context.get_current() is not record.ctx or record.owner != _owner():
            return False
        record.token = None
        try:
            otel_context.detach(token)
        except Exception:  # noqa: BLE001
            _logger.debug("llmtel: could not detach an openai-agents span's context", exc_info=True)
        return True

    def _detach_stale(self) -> None:
        """Detach contexts whose span ended elsewhere, once they are current again where they started."""
        while self._stale:
            key = otel_context.get_value(_SDK_KEY)
            record = self._stale.get(key) if isinstance(key, str) else None
            if record is None or not self._detach(record):
                return
            with self._lock:
                self._stale.pop(key, None)  # type: ignore[arg-type]

    def _forward_error(self, key: str | None, error: Any) -> None:
        record = self._open.get(key) if key is not None else None
        if record is not None and record.error is None:
            record.error = error

    # -- ending ----------------------------------------------------------------------

    def _close(self, key: str, record: _Open, attrs: dict[str, Any], result: Any, error: Any) -> None:
        try:
            span = record.span
            error = error or record.error
            if error:
                _record_sdk_error(span, error)
            if record.scope is not None:
                if attrs:
                    span.set_attributes(attrs)
                record.scope._exit(record.entered, None, result)
            else:
                api._end_span(span, None, attrs)
        finally:
            if self._detach(record):
                self._detach_stale()
            else:
                with self._lock:
                    self._stale[key] = record


# ---------------------------------------------------------------------------------------
# Registration


class OpenAIAgentsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Adds :class:`AgentsTraceProcessor` to the OpenAI Agents SDK's trace processors (once)."""

    # One per process: the SDK cannot remove a processor, so it is registered once and switched.
    _processor: AgentsTraceProcessor | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        # Importing the SDK takes ~1 s: register when the app imports it (at once if it already
        # has), so apps that have it installed but never use it start as fast as without it.
        # `opentelemetry-instrument` checks only the `instruments` extra (openai), so the SDK
        # may be missing altogether; then the hook never fires.
        cls = type(self)
        if cls._processor is not None:
            cls._processor.enabled = True
            return
        wrapt.register_post_import_hook(_register_processor, "agents")

    def _uninstrument(self, **kwargs: Any) -> None:
        # Spans already open still end (and detach) normally; no new ones start.
        if type(self)._processor is not None:
            type(self)._processor.enabled = False


def _register_processor(module: Any) -> None:
    """Add our processor beside the SDK's own, once; the SDK's processors must be TracingProcessors."""
    try:
        cls = OpenAIAgentsInstrumentor
        if cls._processor is None:
            from agents import add_trace_processor
            from agents.tracing import TracingProcessor

            processor_class = type("LLMtelAgentsTraceProcessor", (AgentsTraceProcessor, TracingProcessor), {})
            cls._processor = processor_class()
            add_trace_processor(cls._processor)
        cls._processor.enabled = True
    except Exception:  # noqa: BLE001 - an SDK we do not understand is not traced; the app runs on
        _logger.debug("llmtel: could not add the openai-agents trace processor", exc_info=True)
