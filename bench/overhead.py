"""What llmtel's instrumentation adds to an ``openai`` chat call, and to each chunk of a stream.

Prints figures; it is a report, not a test (it always exits 0). Usage::

    python bench/overhead.py              # full run, ~14 minutes on 2 cores
    python bench/overhead.py --quick      # smaller N, ~5 minutes
    python bench/overhead.py --python /path/to/benchvenv/bin/python   # with the peers

Every call goes to a zero-latency ``httpx2.MockTransport`` that answers with realistic
``chat.completion`` JSON (usage with details, ``system_fingerprint``, ``service_tier``) or an SSE
stream of ``chat.completion.chunk`` s, and telemetry goes to the SDK's ``TracerProvider`` with a
``BatchSpanProcessor`` (its exporter drops the spans) and a ``MeterProvider`` with an
``InMemoryMetricReader``. Modes:

``bare``         the call, uninstrumented
``llmtel``       the call with ``OpenAIInstrumentor`` on
``floor``        the bare call plus, by hand, what the SDK costs for the same telemetry: one span with
                 the attributes llmtel sets on this call (captured once from a real llmtel span), one
                 duration and two token-usage histogram records
``official``     the official OpenTelemetry instrumentation (``opentelemetry-instrumentation-openai-v2``,
                 default settings), when the interpreter has it
``openllmetry``  OpenLLMetry (``opentelemetry-instrumentation-openai``, default settings), likewise
``api-*``        the ``workflow``/``agent``/``tool``/``context`` API: a decorated agent and tool call
                 against the SDK span with the same attributes, ``with context(...)``, and a plain
                 span before and after the first ``context()`` (which adds a span processor)
``llmtel-nousage-stream``  llmtel with ``OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE=false``
``*-stream``     ``stream=True``: content chunks plus the final chunk, and the usage-only chunk when the
                 request asks for it (llmtel does ask, then hides it from the caller)

Two figures per mode:

* **CPU instructions per call**, counted by ``valgrind --tool=callgrind`` (all threads, the span
  processor's worker included) as ``(I(3N) - I(N)) / 2N`` over runs of N and 3N calls, so start-up
  and import costs cancel out. Two runs of the same code differ by about 2 M instructions, so a
  per-call figure is good to about +-0.01 M; the targets are set on this figure.
* **Median wall time per call** from interleaved rounds (A B A B ...), one short process per mode
  and round, for the README only: wall time on a shared 2-core machine swings by +-50% between runs.

The cost per stream chunk is the *marginal* one: streams of 50 and of 150 content chunks, the
difference divided by the 100 extra chunks, instrumented minus bare. The SDK spends ~818,000
instructions per chunk, so llmtel's few thousand are a difference of two large numbers, and runs
in separate processes moved it by +-1,500 between identical runs (3,066 to 6,660 for the same
code: each process has its own hash seeds in the SDK's compiled parts and its own memory layout).
So the four legs are counted in **one** process, round after round (bare 50, bare 150, llmtel 50,
llmtel 150; instrument() and uninstrument() between), each leg inside a ``functools.reduce`` call
that callgrind dumps its count before and after (``--dump-before``/``--dump-after``); the report
gives the median round and the spread. What a stream costs once (the proxy, the usage chunk
llmtel asks for, the span) is shown separately, per stream of 50 chunks (N and 3N streams).
The cost of a span started outside any context once contexts were used is counted the same way:
legs of plain spans before the first ``context()`` and after it was left, in one process, beside a
control process running the same legs with no context in between.

The official and OpenLLMetry instrumentations register the entry point ``openai``; do not install
them where ``opentelemetry-instrument`` or the tests would load them. Put them in a venv of their
own and point ``--python`` at it (every child process then runs with that interpreter)::

    python -m venv /work/benchvenv
    /work/benchvenv/bin/pip install -e '.[sdk]' openai httpx2 httpx 'opentelemetry-util-genai==1.1b0' \\
        opentelemetry-instrumentation-openai-v2 opentelemetry-instrumentation-openai

``OTEL_*`` variables are removed from the children's environment, so llmtel runs with its defaults
(no content capture) and the official instrumentation on its default (v1.30) conventions.

Children import llmtel the way the interpreter resolves it, at the moment each one starts: do not
edit ``instrumentation/`` during a run (the report warns when the source changed). To measure a
fixed version while working on the tree, put a copy first on the path, e.g. for the last commit::

    rm -rf /tmp/snap && mkdir /tmp/snap && git archive HEAD instrumentation llmtel | tar -x -C /tmp/snap
    mv /tmp/snap/instrumentation /tmp/snap/llmtel/
    PYTHONPATH=/tmp/snap /work/venv/bin/python bench/overhead.py ...
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

SCRIPT = os.path.abspath(__file__)
TARGET_RATIO_TO_FLOOR = 1.25
TARGET_INSTRUCTIONS_PER_CHUNK = 5_000
CHUNKS = 50  # content chunks in a stream; the marginal cost per chunk also runs 3 * CHUNKS
CHUNK_MODES = ("llmtel-stream", "llmtel-nousage-stream")  # per-chunk figures, in-process legs
SPAN_LEG_ROUNDS = 3  # legs of spans before any context(), and as many after
_LEG_MARKER = "functools_reduce"  # the C function each leg runs inside; callgrind dumps around it
NOT_INSTALLED = 3  # a child's exit code when its instrumentation cannot be imported

CHAT_MODES = ("bare", "llmtel", "floor", "official", "openllmetry")
STREAM_MODES = ("bare-stream", "llmtel-stream", "llmtel-nousage-stream")
PEERS = {"official": "the official instrumentation", "openllmetry": "OpenLLMetry"}
# The workflow/agent/tool/context API, each against the SDK's own cost of the same span.
API_MODES = ("api-agent-floor", "api-agent", "api-tool-floor", "api-tool", "api-context",
             "api-span", "api-span-after-context", "api-context-then-span")
TARGET_DECORATOR_RATIO = 1.2
TARGET_CONTEXT_INSTRUCTIONS = 20_000

# --- The mock API -------------------------------------------------------------------------------

REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a concise assistant for a hardware store."},
        {"role": "user", "content": "Which primer should I use on galvanised steel before painting it?"},
    ],
    "temperature": 0.2,
    "top_p": 0.9,
    "max_completion_tokens": 256,
    "seed": 42,
    "stop": ["\n\n\n"],
    "frequency_penalty": 0.1,
    "presence_penalty": 0.1,
    "service_tier": "default",
}
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
ANSWER = ("Use a primer made for galvanised metal: a water-based acrylic or a two-part epoxy "
          "etch primer. Clean the zinc with a degreaser first, let it dry, then prime and paint.")
_HEADERS = {
    "content-type": "application/json",
    "x-request-id": "req_5d1c6f0b7e8a4d2c9f3e1a0b4c7d8e9f",
    "openai-processing-ms": "412",
    "openai-version": "2020-10-01",
}
_SSE_HEADERS = {**_HEADERS, "content-type": "text/event-stream; charset=utf-8"}
_COMMON = {"id": "chatcmpl-BQ3wYx7sZ2kLpVn8rT4uE6hJ1mC0d", "created": 1745851234, "model": RESPONSE_MODEL,
           "service_tier": "default", "system_fingerprint": "fp_96c46af214"}
_USAGE = {
    "prompt_tokens": 1234,
    "completion_tokens": 48,
    "total_tokens": 1282,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}


def chat_completion_body() -> bytes:
    return json.dumps({
        **_COMMON,
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": ANSWER, "refusal": None, "annotations": []}}],
        "usage": _USAGE,
    }).encode()


def chat_stream_body(chunks: int, include_usage: bool) -> bytes:
    """SSE: ``chunks`` content chunks, the finish chunk, the usage-only chunk when asked for, [DONE]."""
    words = ANSWER.split(" ")

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {**_COMMON, "object": "chat.completion.chunk", "choices": choices, **extra}
        if include_usage and "usage" not in body:
            body["usage"] = None  # the real API sends "usage": null on every chunk once it was asked for
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"  # the API's compact JSON

    parts = []
    for i in range(chunks):
        delta: dict[str, Any] = {"content": " " + words[i % len(words)]}
        if i == 0:
            delta = {"role": "assistant", "content": words[0], "refusal": None}
        parts.append(event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]))
    parts.append(event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    if include_usage:
        parts.append(event([], usage=_USAGE))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def mock_client(chunks: int) -> Any:
    """An ``openai.OpenAI`` client whose transport answers at once from prebuilt bodies."""
    import httpx2
    import openai

    completion = chat_completion_body()
    streams = {False: chat_stream_body(chunks, False), True: chat_stream_body(chunks, True)}

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = request.content  # the SDK's compact JSON
        if b'"stream":true' not in body:
            return httpx2.Response(200, headers=_HEADERS, content=completion)
        include_usage = b'"include_usage":true' in body
        return httpx2.Response(200, headers=_SSE_HEADERS, content=streams[include_usage])

    http_client = httpx2.Client(transport=httpx2.MockTransport(handle))
    return openai.OpenAI(api_key="sk-bench", http_client=http_client, max_retries=0)


# --- Telemetry -------------------------------------------------------------------------------


@dataclass
class Providers:
    tracer_provider: Any
    meter_provider: Any
    metric_reader: Any
    exported: Callable[[], int]  # how many spans reached the exporter

    def finish(self) -> int:
        """Export what is queued (the worker's share is part of the count), stop the worker; spans exported."""
        self.tracer_provider.force_flush()
        self.metric_reader.get_metrics_data()
        self.tracer_provider.shutdown()
        return self.exported()


def sdk_providers(batch_at_end: bool = False) -> Providers:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DroppingExporter(SpanExporter):
        spans = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = DroppingExporter()
    tracer_provider = TracerProvider()
    # Batches go out when 512 spans are queued and at the final flush. The default 5 s timer
    # would fire ~50x more often per call under valgrind than at native speed, and its wake-ups
    # depend on wall time, which makes the counts drift between runs.
    #
    # With ``batch_at_end`` (the API modes, a few thousand instructions per span apart) nothing
    # wakes the worker before the final flush: its wake-ups make a span's count vary by as much
    # as the differences measured.
    size = {"max_queue_size": 1_000_000, "max_export_batch_size": 1_000_000} if batch_at_end else {}
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000, **size))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return Providers(tracer_provider, meter_provider, reader, lambda: exporter.spans)


# --- Workloads: one call each, and how to switch its instrumentation on and off ----------------


def _nothing() -> None:
    return None


@dataclass
class Workload:
    call: Callable[[], int]  # returns how many chunks the caller saw (1 for a whole response)
    enable: Callable[[], None] = _nothing
    disable: Callable[[], None] = _nothing


# The method is looked up on every call, as an application does: a bound method taken before
# `instrument()` would bypass the patch.


def _chat_call(client: Any) -> Callable[[], int]:
    def call() -> int:
        client.chat.completions.create(**REQUEST)
        return 1

    return call


def _stream_call(client: Any) -> Callable[[], int]:
    def call() -> int:
        seen = 0
        for _ in client.chat.completions.create(stream=True, **REQUEST):
            seen += 1
        return seen

    return call


def _instrumentor_workload(instrumentor: Any, call: Callable[[], None], providers: Providers) -> Workload:
    def enable() -> None:
        instrumentor.instrument(tracer_provider=providers.tracer_provider,
                                meter_provider=providers.meter_provider, skip_dep_check=True)

    return Workload(call, enable, instrumentor.uninstrument)


def llmtel_instrumentor() -> Any:
    from llmtel.instrumentation import OpenAIInstrumentor

    return OpenAIInstrumentor()


def peer_instrumentor(mode: str) -> Any | None:
    """The peer instrumentation for ``mode``, or None when this interpreter does not have it."""
    try:
        if mode == "official":
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        else:
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    except ImportError:
        return None
    return OpenAIInstrumentor()


@dataclass(frozen=True)
class CapturedTelemetry:
    """What llmtel records for one call, as plain data the floor replays through the SDK."""

    span_name: str
    request_attributes: dict[str, Any]
    response_attributes: dict[str, Any]
    duration_attributes: dict[str, Any]
    token_records: tuple[tuple[int, dict[str, Any]], ...]


_RESPONSE_PREFIXES = ("gen_ai.response.", "gen_ai.usage.", "openai.response.")


def capture_llmtel_telemetry(client: Any) -> CapturedTelemetry:
    """One instrumented call into in-memory exporters; the floor then emits exactly this."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    instrumentor = llmtel_instrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader]),
                            skip_dep_check=True)
    try:
        _chat_call(client)()
    finally:
        instrumentor.uninstrument()
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    # Attributes known only from the response are set when the span ends, as any instrumentation must.
    response = {k: v for k, v in attributes.items() if k.startswith(_RESPONSE_PREFIXES)}
    request = {k: v for k, v in attributes.items() if k not in response}
    points = {metric.name: metric.data.data_points
              for resource_metrics in reader.get_metrics_data().resource_metrics
              for scope_metrics in resource_metrics.scope_metrics
              for metric in scope_metrics.metrics}
    (duration,) = points["gen_ai.client.operation.duration"]
    tokens = tuple((int(p.sum), dict(p.attributes)) for p in points["gen_ai.client.token.usage"])
    return CapturedTelemetry(span.name, request, response, dict(duration.attributes), tokens)


def floor_workload(client: Any, providers: Providers) -> Workload:
    """The bare call plus the SDK calls that emit llmtel's telemetry for it, nothing else."""
    from opentelemetry.trace import SpanKind

    from llmtel.instrumentation import semconv as sc

    captured = capture_llmtel_telemetry(client)
    tracer = providers.tracer_provider.get_tracer("bench.floor")
    meter = providers.meter_provider.get_meter("bench.floor")
    duration = meter.create_histogram(sc.METRIC_OPERATION_DURATION, unit="s",
                                      explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS)
    tokens = meter.create_histogram(sc.METRIC_TOKEN_USAGE, unit="{token}",
                                    explicit_bucket_boundaries_advisory=sc.TOKEN_BUCKETS)
    chat = _chat_call(client)
    perf_counter = time.perf_counter

    def call() -> int:
        started = perf_counter()
        span = tracer.start_span(captured.span_name, kind=SpanKind.CLIENT, attributes=captured.request_attributes)
        chat()
        span.set_attributes(captured.response_attributes)
        span.end()
        duration.record(perf_counter() - started, captured.duration_attributes)
        for value, attributes in captured.token_records:
            tokens.record(value, attributes)
        return 1

    return Workload(call)


def api_workload(mode: str, providers: Providers) -> Workload:
    """One decorated call, one ``with context(...)``, or the SDK span each is measured against.

    The floors emit by hand what the decorators emit: the span with its start attributes, the
    totals set at its end (agent), nothing else.
    """
    from opentelemetry.trace import SpanKind

    from llmtel.instrumentation import agent, api, context, tool

    api.configure(providers.tracer_provider.get_tracer("llmtel.instrumentation"), None, providers.tracer_provider)
    tracer = providers.tracer_provider.get_tracer("bench.floor")
    agent_start = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}
    agent_end = {"llmtel.agent.llm_calls": 0, "llmtel.agent.tool_calls": 0,
                 "llmtel.agent.input_tokens": 0, "llmtel.agent.output_tokens": 0}
    tool_start = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                  "gen_ai.tool.type": "function"}

    @agent("triage")
    def triage() -> int:
        return 1

    @tool()
    def lookup_order() -> int:
        return 1

    def agent_floor() -> int:
        span = tracer.start_span("invoke_agent triage", kind=SpanKind.INTERNAL, attributes=agent_start)
        span.set_attributes(agent_end)
        span.end()
        return 1

    def tool_floor() -> int:
        tracer.start_span("execute_tool lookup_order", kind=SpanKind.INTERNAL, attributes=tool_start).end()
        return 1

    def in_context() -> int:
        with context(user_id="customer-42", session_id="session-7"):
            return 1

    def plain_span() -> int:
        tracer.start_span("GET /orders", kind=SpanKind.SERVER, attributes=agent_start).end()
        return 1

    def context_then_span() -> int:  # the worst case for the processor stepping in and out
        in_context()
        return plain_span()

    if mode.startswith("api-span-after-context"):
        # A context puts the ContextSpanProcessor in the span path; once STEP_OUT_AFTER spans have
        # started with no context alive it takes itself out again.
        from llmtel.instrumentation.processors import STEP_OUT_AFTER

        if mode.endswith("-control"):  # the same spans, no context
            tracer.start_span("in a context").end()
        else:
            with context(user_id="customer-42"):
                tracer.start_span("in a context").end()
        for _ in range(STEP_OUT_AFTER):
            tracer.start_span("outside, before the measured calls").end()
    calls = {"api-agent-floor": agent_floor, "api-agent": triage, "api-tool-floor": tool_floor,
             "api-tool": lookup_order, "api-context": in_context, "api-span": plain_span,
             "api-span-after-context": plain_span, "api-span-after-context-control": plain_span,
             "api-context-then-span": context_then_span}
    return Workload(calls[mode])


def build_workload(mode: str, chunks: int, providers: Providers) -> Workload | None:
    """The workload for ``mode``; None when its instrumentation is not installed."""
    if mode.startswith("api-"):
        return api_workload(mode, providers)
    client = mock_client(chunks)
    base, _, kind = mode.partition("-")
    call = _stream_call(client) if kind.endswith("stream") else _chat_call(client)
    if kind == "nousage-stream":  # llmtel without asking the API for stream usage
        os.environ["OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE"] = "false"
    if base == "bare":
        return Workload(call)
    if base == "llmtel":
        return _instrumentor_workload(llmtel_instrumentor(), call, providers)
    if base == "floor":
        return floor_workload(client, providers)
    instrumentor = peer_instrumentor(base)
    if instrumentor is None:
        return None
    return _instrumentor_workload(instrumentor, call, providers)


# --- Child processes ----------------------------------------------------------------------------

WARM_UP_CALLS = 5
_SOURCE = "source: "


def source_fingerprint() -> str:
    """Where ``llmtel.instrumentation`` is imported from, and a digest of its files' sizes and times.

    Every child prints it: runs of N and 3N calls that imported different code (someone saved a
    file during the bench) make figures that mean nothing, and the report says so.
    """
    spec = importlib.util.find_spec("llmtel.instrumentation")
    if spec is None or not spec.submodule_search_locations:
        return "llmtel not importable"
    directory = spec.submodule_search_locations[0]
    files = sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
                   for entry in os.scandir(directory) if entry.name.endswith(".py"))
    return f"{directory} ({hashlib.sha1(repr(files).encode()).hexdigest()[:10]})"


def run_calls(mode: str, calls: int, chunks: int, timed: bool = False) -> int:
    """Child: warm up, make ``calls`` calls, flush; checks what the caller saw and what was exported.

    Under valgrind the count is valgrind's; with ``timed`` it prints the wall µs per call.
    """
    print(_SOURCE + source_fingerprint(), flush=True)
    providers = sdk_providers(batch_at_end=mode.startswith("api-"))
    workload = build_workload(mode, chunks, providers)
    if workload is None:
        return NOT_INSTALLED
    workload.enable()
    # The caller sees the content chunks and the finish chunk, never a usage chunk it did not ask for.
    expected = chunks + 1 if mode.endswith("-stream") else 1
    seen = workload.call()
    if seen != expected:
        print(f"{mode}: the caller saw {seen} chunks, expected {expected}", file=sys.stderr)
        return 1
    for _ in range(WARM_UP_CALLS - 1):
        workload.call()
    # A full collection walks every object the imports made (~100k here, ~50 M instructions), and
    # whether the 3N run crosses one more of them than the N run would swing a per-call figure by
    # ~0.15 M. Frozen, they are skipped; the garbage the calls make is still collected and counted.
    gc.collect()
    gc.freeze()
    # The collector is off while the calls run. Its passes land at different calls in runs whose
    # code or length differs slightly (before and after the first context(), streams of 50 and
    # 150 chunks), and each pass walks whatever is alive then (the API modes keep every finished
    # span queued): per-span and per-chunk figures moved by ±1,000 instructions or more between
    # runs. The calls of llmtel and of the bare SDK leave no cyclic garbage (tests/test_streams.py
    # checks llmtel's), so nothing they make is left uncounted; a peer's cycles, if any, would be.
    gc.disable()
    started = time.perf_counter()
    for _ in range(calls):
        workload.call()
    elapsed = time.perf_counter() - started
    gc.enable()
    workload.disable()
    spans = providers.finish()
    expected = 0 if mode.startswith("bare") or mode == "api-context" else WARM_UP_CALLS + calls
    if mode == "api-span-after-context":  # the spans made beforehand, in the context and after it
        expected += 1 + _step_out_after()
    if spans != expected:
        print(f"{mode}: {spans} spans exported, expected {expected}", file=sys.stderr)
        return 1
    if timed:
        print(elapsed / calls * 1e6)
    return 0


def run_chunk_legs(mode: str, streams: int, rounds: int) -> int:
    """Child: the per-chunk legs in one process, each inside ``functools.reduce`` (callgrind dumps around it).

    Per round: ``streams`` streams of CHUNKS chunks bare, of 3 * CHUNKS bare, then the same with
    llmtel instrumented. Prints the number of legs, for the parent to check the dumps against.
    """
    print(_SOURCE + source_fingerprint(), flush=True)
    if mode == "llmtel-nousage-stream":
        os.environ["OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE"] = "false"
    providers = sdk_providers(batch_at_end=True)  # no worker wake-up inside a leg
    short, long = _stream_call(mock_client(CHUNKS)), _stream_call(mock_client(3 * CHUNKS))
    instrumented = _instrumentor_workload(llmtel_instrumentor(), short, providers)

    for on in (False, True):
        if on:
            instrumented.enable()
        for call, chunks in ((short, CHUNKS), (long, 3 * CHUNKS)):
            seen = [call() for _ in range(WARM_UP_CALLS)]
            if seen != [chunks + 1] * WARM_UP_CALLS:
                print(f"{mode}: the caller saw {seen} chunks, expected {chunks + 1}", file=sys.stderr)
                return 1
        if on:
            instrumented.disable()
    gc.collect()
    gc.freeze()
    gc.disable()  # as in run_calls
    for _ in range(rounds):
        for on in (False, True):
            if on:
                instrumented.enable()
            _run_leg(short, streams)
            _run_leg(long, streams)
            if on:
                instrumented.disable()
    gc.enable()
    spans = providers.finish()
    expected = WARM_UP_CALLS * 2 + rounds * 2 * streams
    if spans != expected:
        print(f"{mode}: {spans} spans exported, expected {expected}", file=sys.stderr)
        return 1
    print(f"legs {rounds * 4}")
    return 0


def _run_leg(work: Callable[[], object], times: int) -> None:
    """``times`` calls of ``work`` inside ``functools.reduce``, the marker callgrind dumps around."""

    def legs_of(_: None, __: None) -> None:
        for _ in range(times):
            work()

    functools.reduce(legs_of, [None], None)


def run_span_legs(spans: int, rounds: int, control: bool) -> int:
    """Child: legs of ``spans`` plain SDK spans before any context(), then after contexts were used and left.

    One process, so both sides share hash seeds and memory layout; ``rounds`` legs each side.
    ``control``: the same legs and spans with no context in between (how much the second half
    differs from the first by itself).
    """
    print(_SOURCE + source_fingerprint(), flush=True)
    providers = sdk_providers(batch_at_end=True)
    before = api_workload("api-span", providers)
    for _ in range(WARM_UP_CALLS):
        before.call()
    gc.collect()
    gc.freeze()
    gc.disable()
    for _ in range(rounds):
        _run_leg(before.call, spans)
    # A context, then STEP_OUT_AFTER lone spans (the control: the same spans, no context).
    after = api_workload("api-span-after-context-control" if control else "api-span-after-context", providers)
    for _ in range(WARM_UP_CALLS):
        after.call()
    for _ in range(rounds):
        _run_leg(after.call, spans)
    gc.enable()
    exported = providers.finish()
    expected = 2 * (WARM_UP_CALLS + rounds * spans) + 1 + _step_out_after()
    if exported != expected:
        print(f"span legs: {exported} spans exported, expected {expected}", file=sys.stderr)
        return 1
    print(f"legs {2 * rounds}")
    return 0


# --- The valgrind runner ------------------------------------------------------------------------

_COLLECTED = re.compile(rb"==\d+== Collected : (\d+)")


@dataclass(frozen=True)
class Run:
    mode: str
    calls: int
    chunks: int


def child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONHASHSEED"] = "0"  # same dict layouts, same counts
    return env


def _source_of(stdout: str) -> str:
    return next((line[len(_SOURCE):] for line in stdout.splitlines() if line.startswith(_SOURCE)), "?")


def count_instructions(python: str, run: Run) -> tuple[int | None, str]:
    """Instructions of one child process, all threads (None: mode not installed), and its llmtel source."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               python, SCRIPT, "--child", run.mode, "--calls", str(run.calls), "--chunks", str(run.chunks)]
    done = subprocess.run(command, capture_output=True, env=child_environment(), check=False)
    source = _source_of(done.stdout.decode(errors="replace"))
    if done.returncode == NOT_INSTALLED:
        return None, source
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace")[-3000:]
        raise RuntimeError(f"{run} failed with exit code {done.returncode}:\n{tail}")
    return int(found.group(1)), source


@dataclass(frozen=True)
class ChunkRound:
    """Instructions per extra content chunk in one round of legs: the bare SDK, and with llmtel."""

    bare: float
    llmtel: float

    @property
    def added(self) -> float:
        return self.llmtel - self.bare


def count_legs(python: str, child: list[str], legs: int, sources: set[str]) -> list[int]:
    """The instructions of each leg of one valgrind child (legs run inside ``functools.reduce``)."""
    with tempfile.TemporaryDirectory(prefix="llmtel-legs-") as directory:
        out = os.path.join(directory, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                   f"--dump-before={_LEG_MARKER}", f"--dump-after={_LEG_MARKER}", python, SCRIPT, *child]
        done = subprocess.run(command, capture_output=True, env=child_environment(), check=False)
        stdout = done.stdout.decode(errors="replace")
        sources.add(_source_of(stdout))
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(child)} failed with exit code {done.returncode}:\n"
                               f"{done.stderr.decode(errors='replace')[-3000:]}")
        dumps = sorted((name for name in os.listdir(directory) if re.fullmatch(r"callgrind\.out\.\d+", name)),
                       key=lambda name: int(name.rsplit(".", 1)[1]))
        totals = []
        for name in dumps:
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as file:
                found = re.search(r"^summary: (\d+)$", file.read(), re.MULTILINE)
            totals.append(int(found.group(1)) if found else 0)
    if f"legs {legs}" not in stdout or len(totals) != 2 * legs:
        # Another functools.reduce call on the way would split a leg: the figures would mean nothing.
        raise RuntimeError(f"{' '.join(child)}: {len(totals)} callgrind dumps for {legs} legs")
    return totals[1::2]  # each leg's dump comes after the dump of what ran before it


def count_chunk_legs(python: str, mode: str, streams: int, rounds: int, sources: set[str]) -> list[ChunkRound]:
    """One valgrind child running ``run_chunk_legs``; the per-chunk figures of each round."""
    legs = rounds * 4
    counts = count_legs(python, ["--chunk-child", mode, "--calls", str(streams), "--rounds", str(rounds)],
                        legs, sources)
    per_chunk = streams * 2 * CHUNKS
    return [ChunkRound(bare=(counts[at + 1] - counts[at]) / per_chunk,
                       llmtel=(counts[at + 3] - counts[at + 2]) / per_chunk) for at in range(0, legs, 4)]


def count_span_legs(python: str, spans: int, rounds: int, control: bool,
                    sources: set[str]) -> tuple[list[float], list[float]]:
    """One valgrind child running ``run_span_legs``: per-span counts before any context, and after."""
    child = ["--span-child", "--calls", str(spans), "--rounds", str(rounds)] + (["--control"] if control else [])
    counts = count_legs(python, child, 2 * rounds, sources)
    return [count / spans for count in counts[:rounds]], [count / spans for count in counts[rounds:]]


def count_all(python: str, runs: list[Run], jobs: int, verbose: bool,
              sources: set[str]) -> dict[Run, int | None]:
    """Valgrind children in parallel: instruction counts do not depend on what else runs."""

    def one(run: Run) -> tuple[Run, int | None]:
        started = time.monotonic()
        count, source = count_instructions(python, run)
        sources.add(source)
        if verbose:
            print(f"  {run.mode:<14} calls={run.calls:<4} chunks={run.chunks:<4} "
                  f"{'not installed' if count is None else f'{count:,}'} ({time.monotonic() - started:.0f} s)",
                  flush=True)
        return run, count

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(pool.map(one, runs))


def wall_times(python: str, modes: list[str], quick: bool, sources: set[str]) -> dict[str, float]:
    """Median wall µs per call over rounds A B C ... A B C ..., one short child process per mode and round.

    A process per round rather than instrument()/uninstrument() in one process: OpenLLMetry's
    uninstrument() leaves a wrapper behind (every cycle adds one more span per call), which would
    slow every mode measured after it.
    """
    rounds, calls, streams = (5, 100, 10) if quick else (9, 200, 20)
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            count = streams if mode.endswith("-stream") else calls
            command = [python, SCRIPT, "--child", mode, "--calls", str(count), "--timed"]
            done = subprocess.run(command, capture_output=True, env=child_environment(), check=False, text=True)
            sources.add(_source_of(done.stdout))
            if done.returncode == NOT_INSTALLED:
                continue
            if done.returncode != 0:
                raise RuntimeError(f"wall-time child {mode} failed:\n{done.stderr[-3000:]}")
            samples[mode].append(float(done.stdout.strip().splitlines()[-1]))
    return {mode: statistics.median(values) for mode, values in samples.items() if values}


# --- The report ---------------------------------------------------------------------------------


@dataclass
class Plan:
    calls: int
    streams: int
    api_calls: int
    chunk_streams: int  # streams per leg of the per-chunk figure
    chunk_rounds: int
    runs: list[Run] = field(default_factory=list)

    def __post_init__(self) -> None:
        for mode in CHAT_MODES:
            self.runs += [Run(mode, self.calls, CHUNKS), Run(mode, 3 * self.calls, CHUNKS)]
        for mode in STREAM_MODES:
            self.runs += [Run(mode, self.streams, CHUNKS), Run(mode, 3 * self.streams, CHUNKS)]
        for mode in API_MODES:
            self.runs += [Run(mode, self.api_calls, CHUNKS), Run(mode, 3 * self.api_calls, CHUNKS)]
        # Longest first, so two parallel jobs end together.
        self.runs.sort(key=lambda run: run.calls * (run.chunks if run.mode.endswith("-stream") else 10),
                       reverse=True)

    def per_call(self, counts: dict[Run, int | None], mode: str) -> float | None:
        n = self.streams if mode.endswith("-stream") else self.api_calls if mode.startswith("api-") else self.calls
        low, high = counts[Run(mode, n, CHUNKS)], counts[Run(mode, 3 * n, CHUNKS)]
        if low is None or high is None:
            return None
        return (high - low) / (2 * n)



def _m(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:+.3f}" if signed else f"{value / 1e6:.3f}"


def print_report(plan: Plan, counts: dict[Run, int | None], wall: dict[str, float],
                 chunk_rounds: dict[str, list[ChunkRound]]) -> None:
    per_call = {mode: plan.per_call(counts, mode) for mode in CHAT_MODES + STREAM_MODES}
    bare, bare_stream = per_call["bare"], per_call["bare-stream"]
    assert bare is not None and bare_stream is not None and per_call["floor"] is not None
    floor_added = per_call["floor"] - bare

    print(f"\nInstructions per call: (I(3N) - I(N)) / 2N under callgrind, N = {plan.calls} chat calls, "
          f"{plan.streams} streams of {CHUNKS} chunks. Wall: median of interleaved rounds.\n")
    header = f"{'mode':<14} {'M instr/call':>12} {'added (M)':>10} {'added/floor':>12} {'wall µs':>9} {'added µs':>9}"
    print(header)
    print("-" * len(header))
    for mode in CHAT_MODES + STREAM_MODES:
        value = per_call[mode]
        if value is None:
            print(f"{mode:<14} {'not installed in this interpreter (see --python)':>56}")
            continue
        reference = bare_stream if mode.endswith("-stream") else bare
        added = value - reference
        is_reference = mode in ("bare", "bare-stream")
        ratio = "" if is_reference or mode.endswith("-stream") else f"{added / floor_added:.2f}"
        base_wall = wall.get("bare-stream" if mode.endswith("-stream") else "bare")
        mode_wall = wall.get(mode)
        wall_text = f"{mode_wall:.1f}" if mode_wall is not None else "-"
        added_wall = "" if is_reference or mode_wall is None or base_wall is None else f"{mode_wall - base_wall:+.1f}"
        print(f"{mode:<14} {_m(value):>12} {'' if is_reference else _m(added, True):>10} {ratio:>12} "
              f"{wall_text:>9} {added_wall:>9}")

    llmtel_added = per_call["llmtel"] - bare  # type: ignore[operator]
    ratio = llmtel_added / floor_added
    print(f"\nThe floor (the SDK's own cost for llmtel's telemetry on this call): {floor_added / 1e6:.3f} M")
    verdict = "OK" if ratio <= TARGET_RATIO_TO_FLOOR else "OVER TARGET"
    print(f"llmtel added/floor = {llmtel_added / 1e6:.3f} M / {floor_added / 1e6:.3f} M = {ratio:.2f} "
          f"{'<=' if ratio <= TARGET_RATIO_TO_FLOOR else '>'} {TARGET_RATIO_TO_FLOOR}: {verdict}")
    for peer, name in PEERS.items():
        value = per_call[peer]
        if value is None:
            print(f"{name}: not measured (not importable by this interpreter; see --python)")
            continue
        peer_added = value - bare
        relation = "below" if llmtel_added < peer_added else "ABOVE"
        print(f"{name} adds {peer_added / 1e6:.3f} M ({peer_added / floor_added:.2f}x the floor); "
              f"llmtel is {relation} it by {abs(peer_added - llmtel_added) / 1e6:.3f} M")

    rounds = chunk_rounds["llmtel-stream"]
    chunk = statistics.median(one.added for one in rounds)
    verdict = "OK" if chunk <= TARGET_INSTRUCTIONS_PER_CHUNK else "OVER TARGET"
    print(f"\nllmtel added per stream chunk = {chunk:,.0f} instructions "
          f"{'<=' if chunk <= TARGET_INSTRUCTIONS_PER_CHUNK else '>'} {TARGET_INSTRUCTIONS_PER_CHUNK:,}: {verdict}")
    print(f"  (median of {len(rounds)} rounds in one process, each: {plan.chunk_streams} streams of {3 * CHUNKS} "
          f"against {plan.chunk_streams} of {CHUNKS} chunks, instrumented minus bare; rounds "
          f"{', '.join(f'{one.added:,.0f}' for one in rounds)}; bare SDK cost per chunk "
          f"{statistics.median(one.bare for one in rounds):,.0f})")
    own_rounds = chunk_rounds["llmtel-nousage-stream"]
    own = statistics.median(one.added for one in own_rounds)
    print(f"  with OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE=false (the API is not asked for usage, so its chunks "
          f"carry no \"usage\": null to take out): {own:,.0f} instructions per chunk (rounds "
          f"{', '.join(f'{one.added:,.0f}' for one in own_rounds)})")
    stream_added = per_call["llmtel-stream"] - bare_stream  # type: ignore[operator]
    fixed = stream_added - CHUNKS * chunk
    print(f"  llmtel added per stream of {CHUNKS} chunks = {stream_added / 1e6:.3f} M, of which once per stream "
          f"{fixed / 1e6:.3f} M (span, proxy, and parsing the usage chunk llmtel asks for)")


def print_api_report(plan: Plan, counts: dict[Run, int | None], wall: dict[str, float],
                     span_legs: dict[bool, tuple[list[float], list[float]]]) -> None:
    per_call = {mode: plan.per_call(counts, mode) for mode in API_MODES}
    print(f"\nworkflow/agent/tool/context API, per call (N = {plan.api_calls}):\n")
    header = f"{'mode':<24} {'instructions':>12} {'wall µs':>9}"
    print(header)
    print("-" * len(header))
    for mode in API_MODES:
        value = per_call[mode]
        wall_text = f"{wall[mode]:.2f}" if mode in wall else "-"
        print(f"{mode:<24} {'-' if value is None else f'{value:,.0f}':>12} {wall_text:>9}")
    for name in ("agent", "tool"):
        decorated, floor = per_call[f"api-{name}"], per_call[f"api-{name}-floor"]
        if decorated is None or floor is None:
            continue
        ratio = decorated / floor
        verdict = "OK" if ratio <= TARGET_DECORATOR_RATIO else "OVER TARGET"
        print(f"@{name} call / the SDK's own span with the same attributes = {ratio:.2f} "
              f"{'<=' if ratio <= TARGET_DECORATOR_RATIO else '>'} {TARGET_DECORATOR_RATIO}: {verdict}")
    entry = per_call["api-context"]
    if entry is not None:
        verdict = "OK" if entry <= TARGET_CONTEXT_INSTRUCTIONS else "OVER TARGET"
        print(f"with context(user_id, session_id): (construct,) enter and exit = {entry:,.0f} instructions "
              f"{'<=' if entry <= TARGET_CONTEXT_INSTRUCTIONS else '>'} {TARGET_CONTEXT_INSTRUCTIONS:,}: {verdict}")
    for control in (False, True):
        before_legs, after_legs = span_legs[control]
        before, after = statistics.median(before_legs), statistics.median(after_legs)
        legs = (f"legs of {plan.api_calls} spans, first half {', '.join(f'{leg:,.0f}' for leg in before_legs)}; "
                f"second half {', '.join(f'{leg:,.0f}' for leg in after_legs)}")
        if control:
            print(f"  control, the same process with no context in between: {after - before:+,.0f} ({legs})")
        else:
            print(f"a span started outside any context, after contexts were used and left: {after - before:+,.0f} "
                  f"instructions ({(after - before) / before:+.2%} of the span; target 0)")
            print(f"  (medians in one process: before any context, then after; {legs})")
    alternating, entry, lone = per_call["api-context-then-span"], per_call["api-context"], per_call["api-span"]
    if alternating is not None and entry is not None and lone is not None:
        print(f"a context, then a lone span outside it, again and again: {alternating - entry - lone:+,.0f} "
              f"instructions a round over the two alone (the processor in the span path, stepping out "
              f"every {_step_out_after()} lone spans)")


def _step_out_after() -> int:
    from llmtel.instrumentation.processors import STEP_OUT_AFTER

    return STEP_OUT_AFTER


# --- Entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (about a third of the time)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the children (default: this one)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="valgrind children at once")
    parser.add_argument("--verbose", action="store_true", help="print every valgrind run's count")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--timed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--chunks", type=int, default=CHUNKS, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-child", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--span-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--control", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_calls(args.child, args.calls, args.chunks, args.timed)
    if args.chunk_child:
        return run_chunk_legs(args.chunk_child, args.calls, args.rounds)
    if args.span_child:
        return run_span_legs(args.calls, args.rounds, args.control)

    plan = (Plan(calls=50, streams=10, api_calls=1000, chunk_streams=5, chunk_rounds=3) if args.quick
            else Plan(calls=150, streams=40, api_calls=3000, chunk_streams=10, chunk_rounds=5))
    print(f"valgrind: {len(plan.runs)} runs, {args.jobs} at a time, children run by {args.python}", flush=True)
    started = time.monotonic()
    try:
        sources: set[str] = set()
        with ThreadPoolExecutor(max_workers=len(CHUNK_MODES) + 2) as pool:  # beside the runs: counts, not time
            legs = {mode: pool.submit(count_chunk_legs, args.python, mode, plan.chunk_streams,
                                      plan.chunk_rounds, sources) for mode in CHUNK_MODES}
            spans = {control: pool.submit(count_span_legs, args.python, plan.api_calls, SPAN_LEG_ROUNDS, control,
                                          sources) for control in (False, True)}
            counts = count_all(args.python, plan.runs, args.jobs, args.verbose, sources)
            chunk_rounds = {mode: future.result() for mode, future in legs.items()}
            span_legs = {control: future.result() for control, future in spans.items()}
        wall = wall_times(args.python, list(CHAT_MODES + STREAM_MODES + API_MODES), args.quick, sources)
    except (RuntimeError, OSError) as error:
        print(f"bench failed: {error}")
        return 0
    print_report(plan, counts, wall, chunk_rounds)
    print_api_report(plan, counts, wall, span_legs)
    print(f"\nllmtel imported from {', '.join(sorted(sources))}")
    if len(sources) > 1:
        print("WARNING: the llmtel source changed during the run, so these figures mix versions of it. "
              "Run again and leave the tree alone until it ends.")
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
