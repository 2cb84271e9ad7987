"""The life of one LLM call's span: start, retries, first chunk, stop or fail — exactly once.

The patch layer (``openai_instrumentor``) only decides *when*; this module owns *what*: the
span and its attributes, the metrics, cost, and opt-in content. Everything here is called
from ``_safe`` boundaries, so a bug in it is logged at debug level and never reaches the app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import (
    _SUPPRESS_HTTP_INSTRUMENTATION_KEY,  # type: ignore[attr-defined]
    Context,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY

from llmtel.instrumentation import semconv as sc
from llmtel.instrumentation.api import SCOPE_KEY
from llmtel.instrumentation.cost import PriceTable
from llmtel.instrumentation.providers import Endpoint
from llmtel.instrumentation.settings import Settings
from llmtel.instrumentation.structured_output import check_output, request_schema

_logger = logging.getLogger("llmtel.instrumentation")

# Context key under which the running invocation is visible to hooks below the public
# method (retries inside the openai client) and to nested patched calls.
INVOCATION_KEY = otel_context.create_key("llmtel-invocation")


def current_invocation() -> Invocation | None:
    return otel_context.get_value(INVOCATION_KEY)  # type: ignore[return-value]


@dataclass(frozen=True)
class Operation:
    """How one kind of openai call maps to telemetry."""

    name: str
    request: Callable[[Mapping[str, Any], dict[str, Any], bool], None]
    response: Callable[[Any, dict[str, Any]], None]
    new_stream_state: Callable[[Invocation], Any] | None = None
    content: str | None = None  # "chat" or "responses": which content functions apply


class Telemetry:
    """What every invocation needs: tracer, instruments, prices, settings, event logger."""

    def __init__(self, tracer: Any, meter: Any, event_logger: Any, settings: Settings, prices: PriceTable,
                 api_tracer: Any = None):
        self.tracer = tracer
        self.api_tracer = api_tracer if api_tracer is not None else tracer
        self.settings = settings
        self.prices = prices
        self.event_logger = event_logger
        self.duration = meter.create_histogram(
            sc.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            sc.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=sc.TOKEN_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            sc.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )


_INPUT = {sc.GEN_AI_TOKEN_TYPE: "input"}
_OUTPUT = {sc.GEN_AI_TOKEN_TYPE: "output"}


class Invocation:
    __slots__ = (
        "telemetry",
        "operation",
        "span",
        "context",
        "provider",
        "request_model",
        "metric_attrs",
        "started",
        "first_chunk_at",
        "attempts",
        "finished",
        "schema",
        "stream_state",
        "hide_usage",
        "tools_requested",
        "parse_model",
        "scope",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        operation: Operation,
        endpoint: Endpoint,
        kwargs: Mapping[str, Any],
    ) -> None:
        settings = telemetry.settings
        parent = otel_context.get_current()
        model = kwargs.get("model")
        if not isinstance(model, str):
            model = None
        name = operation.name
        attrs: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: name,
            sc.GEN_AI_PROVIDER_NAME: endpoint.provider,
        }
        if model:
            attrs[sc.GEN_AI_REQUEST_MODEL] = model
        if endpoint.address:
            attrs[sc.SERVER_ADDRESS] = endpoint.address
            attrs[sc.SERVER_PORT] = endpoint.port
        self.metric_attrs = attrs.copy()
        operation.request(kwargs, attrs, settings.capture_content)
        # The agent or workflow this call runs under: it sums our tokens and cost, and learns
        # which tool calls the model asked for; its agent's name goes on our span.
        self.scope = scope = parent.get(SCOPE_KEY)
        if scope is not None and scope.agent_name:
            attrs[sc.GEN_AI_AGENT_NAME] = scope.agent_name
        self.span = telemetry.tracer.start_span(f"{name} {model}" if model else name, context=parent,
                                                kind=SpanKind.CLIENT, attributes=attrs)
        self.telemetry = telemetry
        self.operation = operation
        self.provider = endpoint.provider
        self.request_model = model
        self.started = time.perf_counter()
        self.first_chunk_at: float | None = None
        self.attempts = 1
        self.finished = False
        self.stream_state: Any = None
        self.hide_usage = False
        # A model can answer with tool calls only when offered tools: streams without them skip
        # looking for tool-call deltas in every chunk.
        self.tools_requested = bool(kwargs.get("tools"))
        self.parse_model = None
        self.schema = None
        if sc.GEN_AI_OUTPUT_TYPE in attrs and attrs[sc.GEN_AI_OUTPUT_TYPE] == "json":
            response_format = kwargs.get("response_format")
            text = kwargs.get("text")
            if isinstance(text, Mapping):
                response_format = text.get("format")
            self.schema = request_schema(response_format)
            if isinstance(response_format, type) or kwargs.get("text_format") is not None:
                self.parse_model = True
        # The context of the call: our span, and the HTTP client span (httpx, requests, urllib3
        # instrumentations) suppressed below it, since it would describe the same request twice.
        # Built in one step: set_span_in_context and set_value copy the context each time.
        self.context = Context({**parent, _SPAN_KEY: self.span, _SUPPRESS_HTTP_INSTRUMENTATION_KEY: True,
                                INVOCATION_KEY: self})
        if settings.capture_content:
            self._capture_input(kwargs)

    # -- during the call ------------------------------------------------------------

    def record_retry(self, status_code: int | None, error: BaseException | None) -> None:
        """The openai client is about to retry after a failed attempt."""
        attrs: dict[str, Any] = {sc.LLMTEL_RETRY_ATTEMPT: self.attempts}
        if status_code is not None:
            attrs[sc.HTTP_RESPONSE_STATUS_CODE] = status_code
            attrs[sc.ERROR_TYPE] = str(status_code)
        elif error is not None:
            attrs[sc.ERROR_TYPE] = type(error).__qualname__
        self.attempts += 1
        self.span.add_event(sc.LLMTEL_RETRY_EVENT, attrs)

    def on_first_chunk(self) -> None:
        self.first_chunk_at = time.perf_counter()

    # -- the end ---------------------------------------------------------------------

    def complete(self, result: Any) -> None:
        """A whole (non-streamed) result arrived."""
        attrs: dict[str, Any] = {}
        self.operation.response(result, attrs)
        text = None
        if self.schema is not None or self.parse_model:
            text = _first_output_text(result)
        self._stop(attrs, text, result)

    def complete_stream(self) -> None:
        """The stream ended: exhausted, closed, or abandoned."""
        attrs: dict[str, Any] = {}
        state = self.stream_state
        state.attributes(attrs)
        text = state.first_text() if self.schema is not None else None
        self._stop(attrs, text, None)

    def fail(self, error: BaseException) -> None:
        if self.finished:
            return
        attrs: dict[str, Any] = {}
        if self.stream_state is not None:
            try:
                self.stream_state.attributes(attrs)
            except Exception:  # noqa: BLE001 - partial data only
                _logger.debug("llmtel: openai stream state failed", exc_info=True)
        error_type = type(error).__qualname__
        status_code = getattr(error, "status_code", None)
        attrs[sc.ERROR_TYPE] = error_type
        if self.parse_model and _is_parse_error(error):
            attrs[sc.LLMTEL_OUTPUT_VALID] = False
            attrs[sc.LLMTEL_OUTPUT_ERROR] = str(error)[:500]
        if isinstance(status_code, int):
            attrs[sc.HTTP_RESPONSE_STATUS_CODE] = status_code
        span = self.span
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)[:1000] or error_type))
        self._stop(attrs, None, None, error_type)

    def _stop(self, attrs: dict[str, Any], text: str | None, result: Any, error_type: str | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            self._record_end(attrs, text, result, error_type)
        finally:
            # The context holds this invocation (INVOCATION_KEY): without the cycle the invocation,
            # its span and its stream state are freed at once instead of by the garbage collector.
            self.context = None

    def _record_end(self, attrs: dict[str, Any], text: str | None, result: Any, error_type: str | None) -> None:
        now = time.perf_counter()
        telemetry = self.telemetry
        if self.attempts > 1:
            attrs[sc.LLMTEL_REQUEST_ATTEMPTS] = self.attempts
        first = self.first_chunk_at
        if first is not None:
            attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = first - self.started
        if error_type is None and (self.schema is not None or self.parse_model):
            verdict = check_output(text, self.schema)
            if verdict is not None:
                attrs[sc.LLMTEL_OUTPUT_VALID] = verdict[0]
                if verdict[1]:
                    attrs[sc.LLMTEL_OUTPUT_ERROR] = verdict[1]
        input_tokens = attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)
        output_tokens = attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)
        response_model = attrs.get(sc.GEN_AI_RESPONSE_MODEL)
        if input_tokens is not None or output_tokens is not None:
            cost = telemetry.prices.cost(
                self.provider,
                response_model or self.request_model,
                input_tokens,
                output_tokens,
                attrs.get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 0),
                attrs.get(sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, 0),
                attrs.get(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, 0),
            )
            if cost is not None:
                attrs[sc.GEN_AI_USAGE_COST] = cost
        if telemetry.settings.capture_content and error_type is None:
            self._capture_output(attrs, result)
        scope = self.scope
        if scope is not None:
            scope.add_llm_call(input_tokens, output_tokens, attrs.get(sc.GEN_AI_USAGE_COST),
                               self._requested_tools(result) if error_type is None else ())
        span = self.span
        span.set_attributes(attrs)
        span.end()
        # Metrics carry the low-cardinality attributes only.
        metric_attrs = self.metric_attrs
        if response_model:
            metric_attrs[sc.GEN_AI_RESPONSE_MODEL] = response_model
        if error_type is not None:
            metric_attrs[sc.ERROR_TYPE] = error_type
        # Recorded in the caller's context, not the span's: exemplars then come from the caller's
        # span when it is sampled, and a call outside any span does not pay for exemplar sampling.
        telemetry.duration.record(now - self.started, metric_attrs)
        if first is not None:
            telemetry.first_chunk.record(first - self.started, metric_attrs)
        if input_tokens is not None:
            telemetry.tokens.record(input_tokens, {**metric_attrs, **_INPUT})
        if output_tokens is not None:
            telemetry.tokens.record(output_tokens, {**metric_attrs, **_OUTPUT})

    def _requested_tools(self, result: Any) -> list[tuple[str, str]]:
        state = self.stream_state
        if state is not None:
            return state.tool_calls()
        return _tool_calls_of(result) if result is not None else []

    # -- opt-in content --------------------------------------------------------------

    def _capture_input(self, kwargs: Mapping[str, Any]) -> None:
        from llmtel.instrumentation import content

        limit = self.telemetry.settings.content_max_length
        kind = self.operation.content
        if kind == "chat":
            system, messages = content.chat_input(kwargs.get("messages"), limit)
        elif kind == "responses":
            system, messages = content.responses_input(kwargs.get("input"), kwargs.get("instructions"), limit)
        else:
            return
        attrs: dict[str, Any] = {}
        if system is not None:
            attrs[sc.GEN_AI_SYSTEM_INSTRUCTIONS] = system
        if messages is not None:
            attrs[sc.GEN_AI_INPUT_MESSAGES] = messages
        tools = kwargs.get("tools")
        if isinstance(tools, (list, tuple)) and tools:
            definitions = content.tool_definitions(tools)
            if definitions is not None:
                attrs[sc.GEN_AI_TOOL_DEFINITIONS] = definitions
        self._put_content(attrs)

    def _capture_output(self, attrs: dict[str, Any], result: Any) -> None:
        from llmtel.instrumentation import content

        limit = self.telemetry.settings.content_max_length
        kind = self.operation.content
        messages = None
        state = self.stream_state
        if kind == "chat":
            if state is not None:
                messages = content.chat_output(state.choices(), limit)
            elif result is not None:
                messages = content.chat_output(getattr(result, "choices", None), limit)
        elif kind == "responses":
            response = state.response if state is not None else result
            if response is not None:
                messages = content.responses_output(getattr(response, "output", None), limit)
        if messages is not None:
            mode = self.telemetry.settings.content_mode
            if mode.on_span:
                attrs[sc.GEN_AI_OUTPUT_MESSAGES] = messages
            if mode.as_event:
                self._emit_event({sc.GEN_AI_OUTPUT_MESSAGES: messages})

    def _put_content(self, attrs: dict[str, Any]) -> None:
        if not attrs:
            return
        mode = self.telemetry.settings.content_mode
        if mode.on_span:
            self.span.set_attributes(attrs)
        if mode.as_event:
            self._emit_event(attrs)

    def _emit_event(self, attrs: dict[str, Any]) -> None:
        logger = self.telemetry.event_logger
        if logger is None:
            return
        logger.emit(
            event_name=sc.GEN_AI_OPERATION_DETAILS_EVENT,
            context=self.context,
            attributes={
                sc.GEN_AI_OPERATION_NAME: self.operation.name,
                sc.GEN_AI_PROVIDER_NAME: self.provider,
                **({sc.GEN_AI_REQUEST_MODEL: self.request_model} if self.request_model else {}),
                **attrs,
            },
        )


def _tool_calls_of(result: Any) -> list[tuple[str, str]]:
    """(call id, tool name) of each tool call a chat completion or Responses response asks for."""
    calls: list[tuple[str, str]] = []
    for choice in getattr(result, "choices", None) or ():
        for call in getattr(getattr(choice, "message", None), "tool_calls", None) or ():
            function = getattr(call, "function", None)
            if function is not None:
                calls.append((call.id, function.name))
    for item in getattr(result, "output", None) or ():
        if getattr(item, "type", None) == "function_call":
            calls.append((item.call_id, item.name))
    return calls


def _first_output_text(result: Any) -> str | None:
    choices = getattr(result, "choices", None)
    if choices:
        message = getattr(choices[0], "message", None)
        text = getattr(message, "content", None)
        return text if isinstance(text, str) else None
    text = getattr(result, "output_text", None)
    return text if isinstance(text, str) and text else None


def _is_parse_error(error: BaseException) -> bool:
    """A structured-output parse failure raised by the SDK's ``parse`` helpers."""
    name = type(error).__name__
    return name in ("ValidationError", "JSONDecodeError", "LengthFinishReasonError",
                    "ContentFilterFinishReasonError")
