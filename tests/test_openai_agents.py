"""OpenAI Agents SDK runs in the span tree: workflow → agents → LLM calls, tools, handoffs, guardrails.

The agents run for real (``Runner.run``, ``run_sync``, ``run_streamed``) against the fake OpenAI API,
through the real openai client, so the LLM spans are the client instrumentation's own. Hooks tell
the fake, before each LLM call, which tools the "model" asks for: the tool, then the handoff,
then nothing.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

agents = pytest.importorskip("agents")

from agents import (  # noqa: E402
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    RunHooks,
    Runner,
    custom_span,
    function_tool,
    handoff,
    input_guardrail,
)
from openai import AsyncOpenAI  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402
from telemetry_capture import TelemetryCapture, by_name, parent_name  # noqa: E402

from llmtel.instrumentation import workflow  # noqa: E402
from llmtel.instrumentation.openai_agents import AgentsTraceProcessor, OpenAIAgentsInstrumentor  # noqa: E402

CHAT = "chat gpt-4o-mini"
WORKFLOW = "invoke_workflow Agent workflow"


@pytest.fixture(autouse=True)
def _no_upload_to_openai(monkeypatch):
    """Keep the SDK's own trace export off the network.

    The SDK's default ``BatchTraceProcessor`` stays registered (ours is added beside it); its
    exporter uploads only with a key from ``set_tracing_export_api_key`` or ``OPENAI_API_KEY``
    and otherwise skips the batch with a warning. The models here get their key from the client
    they are given, so removing ``OPENAI_API_KEY`` is enough; the flush on the way out sends the
    buffered batch (to nowhere) before the environment is restored.
    """
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield
    flush = getattr(agents, "flush_traces", None)
    if flush is not None:
        flush()


@pytest.fixture
def telemetry(fake_openai):
    capture = TelemetryCapture()
    with capture.instrumented():
        instrumentor = OpenAIAgentsInstrumentor()
        instrumentor.instrument()
        try:
            yield capture
        finally:
            instrumentor.uninstrument()


@pytest.fixture
def aclient(fake_openai):
    return AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0)


class ScriptedToolCalls(RunHooks):
    """Before each LLM call, sets the tool calls the fake answers with, one entry per call."""

    def __init__(self, fake, *script: list[tuple[str, str]]) -> None:
        self.fake = fake
        self.script = list(script)

    async def on_llm_start(self, context, agent, system_prompt, input_items) -> None:
        self.fake.tool_calls = self.script.pop(0) if self.script else []


def support_agents(aclient, fake, model_class=OpenAIChatCompletionsModel, tool_error: Exception | None = None):
    """triage (a tool, a handoff to billing, an input guardrail) and the hooks that drive it."""
    model = model_class(model="gpt-4o-mini", openai_client=aclient)

    @function_tool
    def lookup_order(order_id: str) -> str:
        """Look up an order by id."""
        if tool_error is not None:
            raise tool_error
        return f"order {order_id} has shipped"

    @input_guardrail
    async def on_topic(context, agent, user_input) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered="refund" in str(user_input))

    billing = Agent(name="billing", instructions="Answer billing questions.", model=model)
    to_billing = handoff(billing)
    triage = Agent(name="triage", instructions="Route the question.", model=model, tools=[lookup_order],
                   handoffs=[to_billing], input_guardrails=[on_topic])
    hooks = ScriptedToolCalls(fake, [("lookup_order", '{"order_id": "A1"}')], [(to_billing.tool_name, "{}")], [])
    return triage, hooks


async def chat(aclient) -> None:
    await aclient.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])






def children(capture, span) -> list:
    kids = [s for s in capture.finished() if s.parent is not None and s.parent.span_id == span.context.span_id]
    return sorted(kids, key=lambda s: s.start_time)


def answered_call_ids(body: dict) -> list[str]:
    """The tool-call ids a request answers: chat `tool` messages, or Responses `function_call_output` items."""
    if "messages" in body:
        return [m["tool_call_id"] for m in body["messages"] if m.get("role") == "tool"]
    return [item["call_id"] for item in body["input"] if item.get("type") == "function_call_output"]


def assert_support_tree(capture, fake, root_parent: str | None = None) -> None:
    """The whole tree of one triage → lookup_order → billing run, and its bookkeeping."""
    spans = by_name(capture)
    (root,) = spans[WORKFLOW]
    (triage,) = spans["invoke_agent triage"]
    (billing,) = spans["invoke_agent billing"]
    (tool_span,) = spans["execute_tool lookup_order"]
    (handoff_span,) = spans["handoff triage -> billing"]
    (guardrail,) = spans["guardrail on_topic"]

    # The exact tree, and nothing else: no span for the SDK's Generation/Response/task/turn spans.
    ours = [s for s in capture.finished() if s.name != root_parent]
    assert sorted((s.name, parent_name(capture, s)) for s in ours) == sorted([
        (WORKFLOW, root_parent),
        ("invoke_agent triage", WORKFLOW),
        ("guardrail on_topic", "invoke_agent triage"),
        (CHAT, "invoke_agent triage"),
        ("execute_tool lookup_order", "invoke_agent triage"),
        (CHAT, "invoke_agent triage"),
        ("handoff triage -> billing", "invoke_agent triage"),
        ("invoke_agent billing", WORKFLOW),
        (CHAT, "invoke_agent billing"),
    ])
    # The guardrail runs beside the first LLM call; the rest is in order.
    assert [s.name for s in children(capture, triage) if s is not guardrail] == [
        CHAT, "execute_tool lookup_order", CHAT, "handoff triage -> billing"]
    assert len({s.context.trace_id for s in ours}) == 1

    # One LLM span per HTTP request the fake saw: the client's own, never a second one from the SDK.
    assert len(spans[CHAT]) == len(fake.requests) == 3
    assert all(s.kind is SpanKind.CLIENT for s in spans[CHAT])
    assert all(s.kind is SpanKind.INTERNAL for s in ours if s.name != CHAT)

    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.workflow.name"] == "Agent workflow"
    assert triage.attributes["gen_ai.agent.name"] == "triage"
    assert triage.attributes["llmtel.agent.tools"] == ("lookup_order",)
    assert triage.attributes["llmtel.agent.handoffs"] == ("billing",)
    assert triage.attributes["llmtel.agent.llm_calls"] == 2
    assert triage.attributes["llmtel.agent.tool_calls"] == 1
    assert billing.attributes["llmtel.agent.llm_calls"] == 1
    assert root.attributes["llmtel.workflow.llm_calls"] == 3
    assert root.attributes["llmtel.workflow.input_tokens"] == sum(
        s.attributes["gen_ai.usage.input_tokens"] for s in spans[CHAT])

    # The tool span carries the id of the call the model asked for (the one the next request answers).
    (call_id,) = answered_call_ids(fake.requests[1].json)
    assert tool_span.attributes["gen_ai.tool.call.id"] == call_id
    assert tool_span.attributes["gen_ai.tool.name"] == "lookup_order"
    assert tool_span.attributes["gen_ai.tool.type"] == "function"
    assert "gen_ai.tool.call.arguments" not in tool_span.attributes  # content capture is off
    assert "gen_ai.tool.call.result" not in tool_span.attributes

    assert handoff_span.attributes["llmtel.handoff.from_agent"] == "triage"
    assert handoff_span.attributes["llmtel.handoff.to_agent"] == "billing"
    assert guardrail.attributes["llmtel.guardrail.triggered"] is False
    assert all(s.status.status_code is StatusCode.UNSET for s in ours)

    # Every span ended exactly once, and the run left no context attached behind it.
    assert set(capture.end_counter.ends.values()) == {1}
    assert len(capture.end_counter.ends) == len(capture.finished())
    assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.parametrize("model_class", [OpenAIChatCompletionsModel, OpenAIResponsesModel])
async def test_run_makes_one_tree_with_the_client_llm_spans(telemetry, fake_openai, aclient, model_class):
    triage, hooks = support_agents(aclient, fake_openai, model_class)
    result = await Runner.run(triage, "Where is my order A1?", hooks=hooks)

    assert result.last_agent.name == "billing"
    assert_support_tree(telemetry, fake_openai)


def test_run_sync(telemetry, fake_openai, aclient):
    triage, hooks = support_agents(aclient, fake_openai)
    Runner.run_sync(triage, "Where is my order A1?", hooks=hooks)

    assert_support_tree(telemetry, fake_openai)


async def test_run_streamed(telemetry, fake_openai, aclient):
    triage, hooks = support_agents(aclient, fake_openai)
    result = Runner.run_streamed(triage, "Where is my order A1?", hooks=hooks)
    async for _ in result.stream_events():
        pass

    assert_support_tree(telemetry, fake_openai)


async def test_run_inside_an_app_workflow_rolls_up_into_it(telemetry, fake_openai, aclient):
    triage, hooks = support_agents(aclient, fake_openai)
    with workflow("support-request"):
        await Runner.run(triage, "Where is my order A1?", hooks=hooks)

    (outer,) = by_name(telemetry)["invoke_workflow support-request"]
    assert_support_tree(telemetry, fake_openai, root_parent="invoke_workflow support-request")
    assert outer.attributes["llmtel.workflow.llm_calls"] == 3
    assert outer.attributes["llmtel.workflow.tool_calls"] == 1


async def test_tool_arguments_and_result_under_content_capture(fake_openai, aclient):
    capture = TelemetryCapture()
    with capture.instrumented(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"):
        instrumentor = OpenAIAgentsInstrumentor()
        instrumentor.instrument()
        try:
            triage, hooks = support_agents(aclient, fake_openai)
            await Runner.run(triage, "Where is my order A1?", hooks=hooks)
        finally:
            instrumentor.uninstrument()

    (tool_span,) = by_name(capture)["execute_tool lookup_order"]
    assert tool_span.attributes["gen_ai.tool.call.arguments"] == '{"order_id": "A1"}'
    assert tool_span.attributes["gen_ai.tool.call.result"] == "order A1 has shipped"


async def test_guardrail_tripwire(telemetry, fake_openai, aclient):
    triage, hooks = support_agents(aclient, fake_openai)
    with pytest.raises(InputGuardrailTripwireTriggered):
        await Runner.run(triage, "I want a refund", hooks=hooks)

    spans = by_name(telemetry)
    (guardrail,) = spans["guardrail on_topic"]
    (triage_span,) = spans["invoke_agent triage"]
    assert guardrail.attributes["llmtel.guardrail.triggered"] is True
    assert guardrail.status.status_code is StatusCode.UNSET  # the guardrail did its job
    assert parent_name(telemetry, guardrail) == "invoke_agent triage"
    assert triage_span.status.status_code is StatusCode.ERROR
    assert triage_span.attributes["error.type"] == "Guardrail tripwire triggered"
    assert len(spans.get(CHAT, ())) == len(fake_openai.requests)
    assert set(telemetry.end_counter.ends.values()) == {1}
    assert not trace.get_current_span().get_span_context().is_valid


async def test_failing_tool_marks_its_span(telemetry, fake_openai, aclient):
    triage, hooks = support_agents(aclient, fake_openai, tool_error=ValueError("orders database is down"))
    await Runner.run(triage, "Where is my order A1?", hooks=hooks)  # the model is told, and goes on

    (tool_span,) = by_name(telemetry)["execute_tool lookup_order"]
    assert tool_span.status.status_code is StatusCode.ERROR
    assert tool_span.attributes["error.type"].startswith("Error running tool")
    assert "gen_ai.tool.call.id" in tool_span.attributes


async def test_concurrent_runs_keep_their_own_trees(telemetry, fake_openai, aclient):
    model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=aclient)
    helper = Agent(name="helper", instructions="Help.", model=model)

    async def run(name: str) -> None:
        await Runner.run(helper, "Hi", run_config=RunConfig(workflow_name=name, group_id=f"thread-{name}"))

    await asyncio.gather(run("first"), run("second"), run("third"))

    spans = by_name(telemetry)
    assert len(spans[CHAT]) == len(spans["invoke_agent helper"]) == 3
    for name in ("first", "second", "third"):
        (root,) = spans[f"invoke_workflow {name}"]
        (agent_span,) = children(telemetry, root)
        (chat,) = children(telemetry, agent_span)
        assert agent_span.name == "invoke_agent helper" and chat.name == CHAT
        assert agent_span.attributes["llmtel.agent.llm_calls"] == 1
        assert root.parent is None
        assert root.attributes["gen_ai.conversation.id"] == f"thread-{name}"
    assert len({s.context.trace_id for s in telemetry.finished()}) == 3


async def test_custom_spans_nest_and_spans_may_end_out_of_order(telemetry, aclient, caplog):
    caplog.set_level(logging.WARNING)
    with agents.trace("nightly-job"):
        with custom_span("load"):
            await chat(aclient)  # under "load"
        # Started without being marked current, and finished out of order in this task.
        first, second = custom_span("first"), custom_span("second")
        first.start()
        second.start()
        first.finish()
        await chat(aclient)  # under "second"
        second.finish()
        await chat(aclient)  # under the workflow again: both contexts are gone
        # Finished by another task: the detach waits until this task's next SDK event.
        background = custom_span("background")
        background.start()

        async def finish() -> None:
            background.finish()

        await asyncio.create_task(finish())

    spans = by_name(telemetry)
    assert [parent_name(telemetry, s) for s in spans[CHAT]] == ["load", "second", "invoke_workflow nightly-job"]
    for name in ("load", "first", "second", "background"):
        assert parent_name(telemetry, spans[name][0]) == "invoke_workflow nightly-job"
    assert set(telemetry.end_counter.ends.values()) == {1}
    assert not trace.get_current_span().get_span_context().is_valid
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]  # no failed detach


async def test_instrument_is_idempotent_and_uninstrument_makes_it_inert(fake_openai, aclient):
    model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=aclient)
    helper = Agent(name="helper", instructions="Help.", model=model)
    capture = TelemetryCapture()
    instrumentor = OpenAIAgentsInstrumentor()
    with capture.instrumented():
        instrumentor.instrument()
        instrumentor.uninstrument()
        instrumentor.instrument()  # registered once: still one processor
        try:
            await Runner.run(helper, "Hi")
        finally:
            instrumentor.uninstrument()
        assert [s.name for s in capture.finished()] == [CHAT, "invoke_agent helper", WORKFLOW]

        capture.spans.clear()
        await Runner.run(helper, "Hi")  # the client is still instrumented; the agents bridge is not
    assert [s.name for s in capture.finished()] == [CHAT]


def test_processor_never_raises_into_the_sdk():
    processor = AgentsTraceProcessor()

    class Broken:
        def __getattr__(self, name):
            raise RuntimeError(name)

    for method in (processor.on_trace_start, processor.on_trace_end, processor.on_span_start, processor.on_span_end):
        method(Broken())
        method(None)
    processor.force_flush()
    processor.shutdown()


def test_sdk_is_imported_only_when_the_app_imports_it():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from llmtel.instrumentation.openai_agents import OpenAIAgentsInstrumentor\n"
        "OpenAIAgentsInstrumentor().instrument()\n"
        "assert 'agents' not in sys.modules, 'imported at instrument()'\n"
        "assert OpenAIAgentsInstrumentor._processor is None\n"
        "import agents\n"
        "from agents.tracing import TracingProcessor\n"
        "assert isinstance(OpenAIAgentsInstrumentor._processor, TracingProcessor)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
