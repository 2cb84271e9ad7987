"""Conformance against recorded OpenAI traffic: instrumentation changes nothing, reports what was said.

Every interaction OpenLLMetry recorded against the real OpenAI, Azure OpenAI and DeepSeek APIs
(``<repo>/../shared/cassettes/openllmetry``; see :mod:`cassette_replay`) is replayed through the
real ``openai`` client twice, without and with :class:`OpenAIInstrumentor`, and:

1. the caller sees the same thing both times: the same parsed result, chunk list or raw bytes,
   or the same exception (the recorded HTTP errors);
2. each LLM span reports the response model, token counts, cache-read tokens and finish reasons
   that the recorded response carries. The expected values are parsed from the recorded JSON
   or SSE body here, independently of the SDK and of the instrumentation.

The instrumented replay runs with ``OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE`` on (the default)
and off. On, streamed chat requests may carry ``stream_options.include_usage``, which the body
matcher lets a recording without it answer; off, nothing may differ from the recorded request.

The test runs whenever the cassette folder exists and is skipped only when it is absent.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from cassette_replay import CASSETTE_ROOT, CassetteReplay, ReplayedCall, ReplaySession, cassette_paths, sse_events
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llmtel.instrumentation import OpenAIInstrumentor
from llmtel.instrumentation.environment_variables import OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE

pytestmark = pytest.mark.skipif(not CASSETTE_ROOT.is_dir(), reason=f"recorded cassettes not found at {CASSETTE_ROOT}")

CASSETTES = cassette_paths() if CASSETTE_ROOT.is_dir() else []

# Endpoints that are one model invocation each: every call must produce exactly one LLM span.
INFERENCE_OPERATIONS = frozenset(
    {
        "chat.completions.create",
        "completions.create",
        "embeddings.create",
        "responses.create",
        "images.generate",
    }
)

OPERATION_NAME = "gen_ai.operation.name"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"


def _cassette_id(path: Path) -> str:
    return str(path.relative_to(CASSETTE_ROOT)).removesuffix(".yaml")


# --- What the recorded response says ------------------------------------------------------


@dataclass(frozen=True)
class RecordedTelemetry:
    """Span values a recorded response implies; None where the response does not say."""

    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    finish_reasons: tuple[str, ...] | None = None


def _chat_usage(usage: dict[str, Any] | None) -> dict[str, int | None]:
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "cache_read_tokens": details.get("cached_tokens"),
    }


def _responses_usage(usage: dict[str, Any] | None) -> dict[str, int | None]:
    usage = usage or {}
    details = usage.get("input_tokens_details") or {}
    return {
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "cache_read_tokens": details.get("cached_tokens"),
    }


def _finish_reasons_by_index(choices: Sequence[dict[str, Any]]) -> tuple[str, ...] | None:
    if not choices:
        return None
    # A choice that reports no finish reason is reported as "" (an attribute array holds strings).
    return tuple(choice.get("finish_reason") or "" for choice in sorted(choices, key=lambda c: c.get("index", 0)))


def _from_choices(body: dict[str, Any]) -> RecordedTelemetry:
    """chat.completion and text_completion bodies."""
    return RecordedTelemetry(
        response_model=body.get("model") or None,
        finish_reasons=_finish_reasons_by_index(body.get("choices") or []),
        **_chat_usage(body.get("usage")),
    )


def _from_chunks(chunks: list[dict[str, Any]]) -> RecordedTelemetry:
    """A chat or text completion stream: the model the chunks name (Azure's first chunk names
    none), each choice's last finish reason, and the usage chunk if the stream has one."""
    models = [chunk["model"] for chunk in chunks if chunk.get("model")]
    last_choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            # One recorded stream (from a mock server) ends with a choice that has no index;
            # it can only be the single choice, index 0.
            index = choice.get("index", 0)
            seen = last_choices.setdefault(index, {"index": index})
            if choice.get("finish_reason"):
                seen["finish_reason"] = choice["finish_reason"]
        usage = chunk.get("usage") or usage
    return RecordedTelemetry(
        response_model=models[-1] if models else None,
        finish_reasons=_finish_reasons_by_index(list(last_choices.values())),
        **_chat_usage(usage),
    )


def _responses_finish_reason(response: dict[str, Any]) -> str:
    """The Responses API reports a status, not a finish reason; this is the chat-style reason
    the status stands for (what a chat completion would have said for the same outcome)."""
    status = response.get("status")
    if status == "completed":
        calls_tool = any(item.get("type") == "function_call" for item in response.get("output") or [])
        return "tool_calls" if calls_tool else "stop"
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "length" if reason == "max_output_tokens" else (reason or "incomplete")
    return "error" if status == "failed" else (status or "")


def _from_response(response: dict[str, Any]) -> RecordedTelemetry:
    return RecordedTelemetry(
        response_model=response.get("model") or None,
        finish_reasons=(_responses_finish_reason(response),),
        **_responses_usage(response.get("usage")),
    )


def _from_response_events(events: list[dict[str, Any]]) -> RecordedTelemetry | None:
    """A Responses stream: its final event (completed, incomplete or failed) holds the response."""
    final = [
        event["response"]
        for event in events
        if event.get("type") in ("response.completed", "response.incomplete", "response.failed")
    ]
    return _from_response(final[-1]) if final else None


def _from_embeddings(body: dict[str, Any]) -> RecordedTelemetry:
    usage = body.get("usage") or {}
    return RecordedTelemetry(response_model=body.get("model") or None, input_tokens=usage.get("prompt_tokens"))


def _from_images(body: dict[str, Any]) -> RecordedTelemetry:
    # An images response names no model; gpt-image-1 reports Responses-style usage.
    return RecordedTelemetry(**_responses_usage(body.get("usage")))


_FROM_JSON = {
    "chat.completions.create": _from_choices,
    "completions.create": _from_choices,
    "embeddings.create": _from_embeddings,
    "responses.create": _from_response,
    "images.generate": _from_images,
}
_FROM_EVENTS = {
    "chat.completions.create": _from_chunks,
    "completions.create": _from_chunks,
    "responses.create": _from_response_events,
}


def recorded_telemetry(call: ReplayedCall) -> RecordedTelemetry | None:
    """What an LLM span for this call must report, from the recorded response alone."""
    interaction = call.interaction
    if call.plan is None or interaction.status >= 400:
        return None
    operation = call.plan.endpoint.operation
    if interaction.is_stream:
        from_events = _FROM_EVENTS.get(operation)
        return from_events(sse_events(interaction.response_body)) if from_events else None
    from_json = _FROM_JSON.get(operation)
    return from_json(json.loads(interaction.response_body)) if from_json else None


# --- Telemetry fixtures -------------------------------------------------------------------


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans: InMemorySpanExporter

    def drain(self) -> list[ReadableSpan]:
        """Spans finished since the last drain."""
        finished = list(self.spans.get_finished_spans())
        self.spans.clear()
        return finished


@pytest.fixture(scope="module")
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield Telemetry(tracer_provider, meter_provider, spans)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _assert_not_instrumented() -> None:
    # OpenAIInstrumentor is a singleton: if another test left it on, the "uninstrumented"
    # baseline would be instrumented and instrument() below a silent no-op.
    assert not OpenAIInstrumentor().is_instrumented_by_opentelemetry, (
        "OpenAIInstrumentor is still instrumented; a test before this one did not uninstrument it"
    )


@contextlib.contextmanager
def instrumented(telemetry: Telemetry) -> Iterator[None]:
    _assert_not_instrumented()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


@pytest.fixture(scope="module")
def baselines() -> dict[Path, CassetteReplay]:
    """Uninstrumented replays, one per cassette, shared by the tests that need them."""
    return {}


def _baseline(baselines: dict[Path, CassetteReplay], path: Path) -> CassetteReplay:
    if path not in baselines:
        _assert_not_instrumented()
        baselines[path] = ReplaySession().replay_cassette(path)
    return baselines[path]


# --- Checks -------------------------------------------------------------------------------


def _replay_problems(replay: CassetteReplay) -> list[str]:
    """Why a replay does not reproduce the recording, if it does not."""
    problems = []
    for call in replay.calls:
        interaction, outcome = call.interaction, call.outcome
        if call.plan is None or outcome is None:
            continue
        where = f"{interaction.label} via {call.plan.description}"
        if call.answered_by != interaction.index:
            problems.append(f"{where}: answered by interaction {call.answered_by}")
        error = outcome.error
        if interaction.status < 400 and error is not None:
            problems.append(f"{where}: raised {error!r}")
        elif interaction.status >= 400 and not (
            isinstance(error, openai.APIStatusError) and error.status_code == interaction.status
        ):
            problems.append(f"{where}: recorded HTTP {interaction.status}, got {error or outcome.value!r:.200}")
    if replay.unplayed:
        problems.append(f"interactions never played: {replay.unplayed}")
    return problems


def _llm_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.CLIENT and OPERATION_NAME in span.attributes]


def _span_problems(span: ReadableSpan, expected: RecordedTelemetry) -> list[str]:
    attributes = span.attributes
    problems = []

    def check(name: str, want: Any) -> None:
        got = attributes.get(name)
        if isinstance(got, Sequence) and not isinstance(got, str):
            got = tuple(got)
        if got != want:
            problems.append(f"{name}: recorded {want!r}, span has {got!r}")

    check(RESPONSE_MODEL, expected.response_model)
    check(INPUT_TOKENS, expected.input_tokens)
    check(OUTPUT_TOKENS, expected.output_tokens)
    check(FINISH_REASONS, expected.finish_reasons)
    # A recorded zero may be reported as 0 or left out; anything else must match.
    if expected.cache_read_tokens or attributes.get(CACHE_READ_TOKENS):
        check(CACHE_READ_TOKENS, expected.cache_read_tokens)
    return problems


def _first_difference(got: Any, want: Any, where: str = "") -> str:
    """Where two outcomes first differ, and how: ``at [1]['choices'][0]: 'x' instead of 'y'``."""
    if isinstance(got, dict) and isinstance(want, dict) and got.keys() == want.keys():
        for key in want:
            if got[key] != want[key]:
                return _first_difference(got[key], want[key], f"{where}[{key!r}]")
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)) and len(got) == len(want):
        for index, (left, right) in enumerate(zip(got, want, strict=True)):
            if left != right:
                return _first_difference(left, right, f"{where}[{index}]")
    return f"at {where or 'top level'}: {got!r:.200} instead of {want!r:.200}"


def _conformance_problems(baseline: CassetteReplay, replay: CassetteReplay) -> list[str]:
    problems = []
    for plain, traced in zip(baseline.calls, replay.calls, strict=True):
        if traced.plan is None or plain.outcome is None or traced.outcome is None:
            continue
        where = f"{traced.interaction.label} via {traced.plan.description}"
        if traced.outcome.comparable != plain.outcome.comparable:
            problems.append(
                f"{where}: the caller sees something else with instrumentation, "
                f"{_first_difference(traced.outcome.comparable, plain.outcome.comparable)}"
            )
        spans = _llm_spans(traced.observed)
        if traced.plan.endpoint.operation in INFERENCE_OPERATIONS and len(spans) != 1:
            problems.append(f"{where}: {len(spans)} LLM spans, expected 1")
        if traced.outcome.error is not None:
            problems.extend(
                f"{where}: span {span.name!r} status is {span.status.status_code.name}, the call raised"
                for span in spans
                if span.status.status_code is not StatusCode.ERROR
            )
        expected = recorded_telemetry(traced)
        if expected is not None:
            for span in spans:
                problems.extend(f"{where}: span {span.name!r}: {problem}" for problem in _span_problems(span, expected))
    return problems


# --- Tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CASSETTES, ids=_cassette_id)
def test_recorded_calls_replay_through_the_openai_client(baselines: dict[Path, CassetteReplay], path: Path) -> None:
    problems = _replay_problems(_baseline(baselines, path))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stream_usage", ["true", "false"], ids=["stream-usage-on", "stream-usage-off"])
@pytest.mark.parametrize("path", CASSETTES, ids=_cassette_id)
def test_instrumentation_changes_no_result_and_reports_the_recorded_values(
    baselines: dict[Path, CassetteReplay],
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    path: Path,
    stream_usage: str,
) -> None:
    baseline = _baseline(baselines, path)
    monkeypatch.setenv(OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE, stream_usage)
    telemetry.drain()
    with instrumented(telemetry):
        replay = ReplaySession().replay_cassette(path, observe=telemetry.drain)
    problems = _replay_problems(replay) + _conformance_problems(baseline, replay)
    if stream_usage == "false":
        # Turned off, the instrumentation must send exactly the request the caller made.
        problems.extend(
            f"{call.interaction.label}: stream_options added although {OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE}=false"
            for call in replay.calls
            if call.stream_usage_added
        )
    assert not problems, "\n".join(problems)
