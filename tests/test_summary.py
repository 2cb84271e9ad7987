"""The console summary: one block per root span, its numbers equal to sums over the exported spans."""

from __future__ import annotations

import io
import re
import threading

import openai
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags

from llmtel.instrumentation import agent, tool, workflow
from llmtel.instrumentation.settings import read_settings
from llmtel.instrumentation.summary import (
    ConsoleSummaryProcessor,
    format_seconds,
    format_usd,
    summary_processor_if_enabled,
)

MESSAGES = [{"role": "user", "content": "Where is my order?"}]


@pytest.fixture
def capture(fake_openai):
    from telemetry_capture import TelemetryCapture

    capture = TelemetryCapture()
    with capture.instrumented():
        yield capture


@pytest.fixture
def out(capture) -> io.StringIO:
    """What a summary processor on the capture's tracer provider prints."""
    stream = io.StringIO()
    capture.tracer_provider.add_span_processor(ConsoleSummaryProcessor(stream=stream))
    return stream


def blocks(text: str) -> list[str]:
    return [block for block in re.split(r"(?m)^(?=llmtel ▸ )", text) if block]


def line(block: str, label: str) -> str:
    (found,) = [row for row in block.splitlines() if row.split()[:1] == [label]]
    return found


def seconds(text: str) -> float:
    value, unit = text.split()
    if value == "<1":
        return 0.0
    return float(value) / 1000 if unit == "ms" else float(value)


def calls_by_name(row: str) -> dict[str, tuple[int, float]]:
    return {name: (int(count), seconds(duration))
            for name, count, duration in re.findall(r"(\S+) ×(\d+) \(([^)]+)\)", row)}


def duration(span) -> float:
    return (span.end_time - span.start_time) / 1e9


def close_to(printed: float, expected: float) -> bool:
    """Equal within the rounding of format_seconds (2 decimals in s, whole ms)."""
    return abs(printed - expected) <= (0.005 if expected >= 1 else 0.0005) + 1e-9


def test_block_sums_the_exported_spans(capture, out, client, fake_openai):
    @tool()
    def lookup_order(order_id: str) -> str:
        return "shipped"

    with workflow("support-request"):
        with agent("triage"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            lookup_order("A1")
            lookup_order("A2")
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES * 3)
        with agent("writer"):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            fake_openai.fail_next(400)
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        lookup_order("A3")
        client.embeddings.create(model="text-embedding-3-small", input="order A1")

    spans = capture.finished()
    (root,) = [s for s in spans if s.parent is None]
    llm = capture.llm_spans()
    model_calls = [s for s in llm if s.attributes["gen_ai.operation.name"] in ("chat", "embeddings")]
    assert len(model_calls) == 5
    input_tokens = sum(s.attributes.get("gen_ai.usage.input_tokens", 0) for s in model_calls)
    output_tokens = sum(s.attributes.get("gen_ai.usage.output_tokens", 0) for s in model_calls)
    cost = sum(s.attributes.get("gen_ai.usage.cost", 0.0) for s in model_calls)
    assert input_tokens > 0 and output_tokens > 0 and cost > 0
    failed = [s for s in spans if s.status.status_code is StatusCode.ERROR]
    assert [(s.name, s.attributes["error.type"]) for s in failed] == [("chat gpt-4o-mini", "BadRequestError")]

    (block,) = blocks(out.getvalue())
    assert len(block.splitlines()) == 5
    header = block.splitlines()[0]
    assert header.startswith(f"llmtel ▸ invoke_workflow support-request  trace {root.context.trace_id:032x}  ")
    assert close_to(seconds(header.rsplit("  ", 1)[1]), duration(root))

    llm_row = line(block, "LLM")
    assert re.search(rf"\b5 calls  tokens {input_tokens:,} in / {output_tokens:,} out  cost \$", llm_row)
    assert "≥" not in llm_row  # the failed call reports no usage and costs nothing
    assert float(llm_row.rsplit("$", 1)[1].replace(",", "")) == pytest.approx(cost, rel=5e-3)

    for label, operation, name_attribute in (("agents", "invoke_agent", "gen_ai.agent.name"),
                                             ("tools", "execute_tool", "gen_ai.tool.name")):
        expected: dict[str, list] = {}
        for span in spans:
            if span.attributes.get("gen_ai.operation.name") == operation:
                entry = expected.setdefault(span.attributes[name_attribute], [0, 0.0])
                entry[0] += 1
                entry[1] += duration(span)
        printed = calls_by_name(line(block, label))
        assert {name: count for name, (count, _) in printed.items()} == {n: c for n, (c, _) in expected.items()}
        for name, (_, total) in printed.items():
            assert close_to(total, expected[name][1]), (name, total, expected[name])
    assert calls_by_name(line(block, "tools"))["lookup_order"][0] == 3

    assert line(block, "errors").split(None, 1)[1] == "chat gpt-4o-mini: BadRequestError"


def test_an_error_is_listed_where_it_started_not_on_every_span_it_passed(capture, out):
    @tool()
    def lookup(order_id: str) -> None:
        raise KeyError(order_id)

    with pytest.raises(KeyError), workflow("job"), agent("triage"):
        lookup("A1")
    (block,) = blocks(out.getvalue())
    assert line(block, "errors") == "  errors  execute_tool lookup: KeyError"


def test_one_block_per_root_and_nothing_before_the_root_ends(capture, out, client):
    @tool()
    def lookup(order_id: str) -> str:
        return "shipped"

    with workflow("first"):
        lookup("A1")
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert out.getvalue() == ""  # a tool and an LLM call ended, the root did not
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # a root of its own

    first, second = blocks(out.getvalue())
    assert first.startswith("llmtel ▸ invoke_workflow first  ")
    assert " 1 call  " in line(first, "LLM") and "lookup ×1" in line(first, "tools")
    assert second.startswith("llmtel ▸ chat gpt-4o-mini  ")
    assert " 1 call  " in line(second, "LLM") and len(second.splitlines()) == 2
    traces = {span.context.trace_id for span in capture.finished()}
    assert [f"{t:032x}" in b for t in traces for b in (first, second)].count(True) == 2


def test_state_is_dropped_when_the_root_ends(capture):
    processor = ConsoleSummaryProcessor(stream=io.StringIO())
    capture.tracer_provider.add_span_processor(processor)
    with workflow("job"), agent("a"):
        with tool("t"):
            pass
        assert len(processor._traces) == 1
    assert len(processor._traces) == 0


def test_a_root_under_a_remote_parent(capture, out):
    remote = SpanContext(trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id=0x00F067AA0BA902B7,
                         is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with workflow("from-upstream"), tool("t"):
            pass
    finally:
        otel_context.detach(token)
    (block,) = blocks(out.getvalue())
    assert block.startswith("llmtel ▸ invoke_workflow from-upstream  trace 4bf92f3577b34da6a3ce929d0e0e4736  ")


def test_cost_is_a_lower_bound_when_some_calls_are_unpriced_and_na_when_none_are_priced(capture, out, client):
    with workflow("mixed"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        client.chat.completions.create(model="my-local-model", messages=MESSAGES)
    with workflow("unpriced"):
        client.chat.completions.create(model="my-local-model", messages=MESSAGES)
    unpriced = [s for s in capture.llm_spans() if s.attributes.get("gen_ai.request.model") == "my-local-model"]
    assert unpriced and all("gen_ai.usage.cost" not in s.attributes for s in unpriced)
    mixed, only_unpriced = blocks(out.getvalue())
    assert re.search(r"cost ≥ \$[\d.]+ \(1 call unpriced\)$", line(mixed, "LLM"))
    assert line(only_unpriced, "LLM").endswith("cost n/a")


def test_traces_without_genai_spans_print_nothing(capture, out):
    tracer = capture.tracer_provider.get_tracer("web")
    with tracer.start_as_current_span("GET /health"), tracer.start_as_current_span("SELECT 1"):
        pass
    assert out.getvalue() == ""


def test_open_traces_are_capped_oldest_first(capture):
    out = io.StringIO()
    processor = ConsoleSummaryProcessor(stream=out, max_open_traces=2)
    capture.tracer_provider.add_span_processor(processor)
    tracer = capture.tracer_provider.get_tracer("app")
    roots = [tracer.start_span(f"request {n}") for n in range(3)]
    for root in roots:
        with trace.use_span(root), tool("t"):
            pass
    assert list(processor._traces) == [r.get_span_context().trace_id for r in roots[1:]]
    for root in roots:
        root.end()
    assert [b.splitlines()[0].split("  ")[0] for b in blocks(out.getvalue())] == [
        "llmtel ▸ request 1", "llmtel ▸ request 2"]  # request 0's numbers were evicted
    assert not processor._traces


def test_concurrent_requests_each_print_one_whole_block(capture, out):
    def run(worker: int) -> None:
        for n in range(20):
            with workflow(f"w{worker}-{n}"), tool("t"):
                pass

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    printed = blocks(out.getvalue())
    assert len(printed) == 160
    assert all(len(b.splitlines()) == 3 and "  tools   t ×1 (" in b for b in printed)


def test_a_failing_stream_never_reaches_the_app(capture):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("stderr closed")

    capture.tracer_provider.add_span_processor(ConsoleSummaryProcessor(stream=Broken()))
    with workflow("job"):
        pass
    assert [s.name for s in capture.finished()] == ["invoke_workflow job"]


def test_color_only_on_a_terminal(capture):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain, terminal = io.StringIO(), Terminal()
    capture.tracer_provider.add_span_processor(ConsoleSummaryProcessor(stream=plain))
    capture.tracer_provider.add_span_processor(ConsoleSummaryProcessor(stream=terminal))
    with workflow("job"):
        pass
    assert "\x1b[" not in plain.getvalue()
    assert "\x1b[1mllmtel ▸ invoke_workflow job\x1b[0m" in terminal.getvalue()


def test_disabled_by_default():
    assert read_settings({}).console_summary is False
    assert summary_processor_if_enabled(read_settings({})) is None
    enabled = read_settings({"OTEL_INSTRUMENTATION_LLMTEL_CONSOLE_SUMMARY": "true"})
    assert isinstance(summary_processor_if_enabled(enabled), ConsoleSummaryProcessor)


def test_instrumentor_prints_to_stderr_only_when_enabled(fake_openai, capsys):
    from telemetry_capture import TelemetryCapture

    default = TelemetryCapture()
    with default.instrumented(), workflow("quiet"):
        pass
    assert "llmtel ▸" not in capsys.readouterr().err

    enabled = TelemetryCapture()
    with enabled.instrumented(OTEL_INSTRUMENTATION_LLMTEL_CONSOLE_SUMMARY="true"), workflow("loud"):
        pass
    assert blocks(capsys.readouterr().err)[0].startswith("llmtel ▸ invoke_workflow loud  ")


@pytest.mark.parametrize(("amount", "text"), [
    (0, "$0"), (0.00042, "$0.00042"), (0.0123456, "$0.0123"), (0.5, "$0.5"), (0.99999, "$1"),
    (1234.5, "$1,234.50"),
])
def test_format_usd(amount, text):
    assert format_usd(amount) == text


@pytest.mark.parametrize(("value", "text"), [
    (0.0001, "<1 ms"), (0.004, "4 ms"), (0.62, "620 ms"), (0.9996, "1.00 s"), (1.8449, "1.84 s"), (250, "250 s"),
])
def test_format_seconds(value, text):
    assert format_seconds(value) == text
