"""workflow / agent / tool / context: the span tree and its attributes, across concurrency."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_capture import by_name, parent_name

from llmtel.instrumentation import agent, context, tool, workflow
from llmtel.instrumentation.processors import STEP_OUT_AFTER

MESSAGES = [{"role": "user", "content": "Where is my order?"}]






def test_request_agent_llm_tool_llm_tree(client, telemetry, fake_openai):
    @tool(description="Look up an order by id")
    def lookup_order(order_id: str) -> dict:
        return {"order_id": order_id, "status": "shipped"}

    first_call_id: list[str] = []

    @agent("triage", id="agent-1", description="Routes support questions")
    def triage() -> str:
        fake_openai.tool_calls = [("lookup_order", '{"order_id": "A1"}')]
        first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=[{
            "type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}])
        call = first.choices[0].message.tool_calls[0]
        first_call_id.append(call.id)
        lookup_order(**json.loads(call.function.arguments))
        fake_openai.tool_calls = []
        second = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return second.choices[0].message.content

    with workflow("support-request"):
        triage()

    spans = by_name(telemetry)
    (root,) = spans["invoke_workflow support-request"]
    (agent_span,) = spans["invoke_agent triage"]
    (tool_span,) = spans["execute_tool lookup_order"]
    llm_spans = spans["chat gpt-4o-mini"]
    assert root.parent is None and root.kind is SpanKind.INTERNAL
    assert parent_name(telemetry, agent_span) == "invoke_workflow support-request"
    assert [parent_name(telemetry, s) for s in llm_spans] == ["invoke_agent triage"] * 2
    assert parent_name(telemetry, tool_span) == "invoke_agent triage"
    # The order reads request -> agent -> LLM -> tool -> LLM.
    assert llm_spans[0].end_time <= tool_span.start_time and tool_span.end_time <= llm_spans[1].start_time

    assert agent_span.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent_span.attributes["gen_ai.agent.name"] == "triage"
    assert agent_span.attributes["gen_ai.agent.id"] == "agent-1"
    assert agent_span.attributes["gen_ai.agent.description"] == "Routes support questions"
    assert tool_span.kind is SpanKind.INTERNAL
    requested_id = first_call_id[0]
    assert dict(tool_span.attributes) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup_order",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.description": "Look up an order by id",
        "gen_ai.tool.call.id": requested_id,  # the id of the call the model asked for
        "gen_ai.agent.name": "triage",  # the agent it runs under: stores group by it span by span
    }
    assert [s.attributes["gen_ai.agent.name"] for s in llm_spans] == ["triage", "triage"]
    assert "gen_ai.agent.name" not in root.attributes

    # Sums: the agent's LLM calls, tool calls, tokens and cost; the workflow rolls them up.
    input_tokens = sum(s.attributes["gen_ai.usage.input_tokens"] for s in llm_spans)
    output_tokens = sum(s.attributes["gen_ai.usage.output_tokens"] for s in llm_spans)
    cost = sum(s.attributes["gen_ai.usage.cost"] for s in llm_spans)
    for span, prefix in ((agent_span, "llmtel.agent."), (root, "llmtel.workflow.")):
        assert span.attributes[prefix + "llm_calls"] == 2
        assert span.attributes[prefix + "tool_calls"] == 1
        assert span.attributes[prefix + "input_tokens"] == input_tokens
        assert span.attributes[prefix + "output_tokens"] == output_tokens
        assert span.attributes[prefix + "cost"] == pytest.approx(cost)


def test_tool_call_id_from_a_streamed_response(client, telemetry, fake_openai):
    @tool
    def get_weather(city: str) -> str:
        return "sunny"

    with agent("weather"):
        fake_openai.tool_calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True,
            tools=[{"type": "function", "function": {"name": "get_weather"}}]))
        ids = [c.id for chunk in chunks for choice in chunk.choices for c in choice.delta.tool_calls or () if c.id]
        get_weather("Paris")
        get_weather("Rome")
        get_weather("Oslo")  # the model asked for two calls only
    tool_spans = by_name(telemetry)["execute_tool get_weather"]
    assert [s.attributes.get("gen_ai.tool.call.id") for s in tool_spans] == [*ids, None]
    assert len(ids) == 2


def test_tool_exception_marks_span_and_propagates_unchanged(telemetry):
    error = ValueError("order not found")

    @tool()
    def lookup(order_id: str) -> None:
        raise error

    with pytest.raises(ValueError) as caught:
        lookup("X")
    assert caught.value is error
    (span,) = telemetry.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ValueError"
    assert [e.name for e in span.events] == ["exception"]


def test_tool_arguments_and_result_only_under_content_capture(fake_openai):
    from telemetry_capture import TelemetryCapture

    @tool("lookup")
    def lookup(order_id: str, verbose: bool = False) -> dict:
        return {"status": "shipped"}

    capture = TelemetryCapture()
    with capture.instrumented():
        lookup("A1")
    assert "gen_ai.tool.call.arguments" not in capture.finished()[0].attributes
    capture = TelemetryCapture()
    with capture.instrumented(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"):
        lookup("A1", verbose=True)
    attrs = capture.finished()[0].attributes
    assert json.loads(attrs["gen_ai.tool.call.arguments"]) == {"order_id": "A1", "verbose": True}
    assert json.loads(attrs["gen_ai.tool.call.result"]) == {"status": "shipped"}


class Shop:
    def __init__(self) -> None:
        self.prefix = "order"

    @tool()
    def status(self, order_id: str) -> str:
        return f"{self.prefix} {order_id} shipped"

    @agent("shop-agent")
    async def run(self, order_id: str) -> str:
        return self.status(order_id)

    @tool()
    async def stream_lines(self, count: int):
        for index in range(count):
            yield index
            await asyncio.sleep(0)


async def test_decorators_on_methods_and_async_generators(telemetry):
    shop = Shop()
    assert await shop.run("A1") == "order A1 shipped"
    assert [i async for i in shop.stream_lines(3)] == [0, 1, 2]
    spans = by_name(telemetry)
    assert parent_name(telemetry, spans["execute_tool status"][0]) == "invoke_agent shop-agent"
    (generator_span,) = spans["execute_tool stream_lines"]
    assert generator_span.parent is None


def test_sync_generator_consumed_elsewhere_keeps_its_parent_and_context(client, telemetry):
    @agent("writer")
    def write(n: int):
        for _ in range(n):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            yield trace.get_current_span().get_span_context().span_id

    with context(user_id="u-1"), workflow("job"):
        generator = write(2)
    # Consumed outside the workflow and the context, in another thread with no propagation.
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(generator))
    thread.start()
    thread.join()
    spans = by_name(telemetry)
    (writer,) = spans["invoke_agent writer"]
    assert results == [writer.context.span_id] * 2
    assert parent_name(telemetry, writer) == "invoke_workflow job"
    for span in spans["chat gpt-4o-mini"]:
        assert parent_name(telemetry, span) == "invoke_agent writer"
        assert span.attributes["user.id"] == "u-1"
    assert writer.attributes["llmtel.agent.llm_calls"] == 2


def test_threads_keep_the_tree_with_threading_instrumentation(client, telemetry):
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    ThreadingInstrumentor().instrument()
    try:
        @tool()
        def embed(text: str) -> int:
            return len(client.embeddings.create(model="text-embedding-3-small", input=text).data)

        with context(session_id="s-9"), agent("retriever"), ThreadPoolExecutor(max_workers=3) as pool:
            assert list(pool.map(embed, ["a", "b", "c"])) == [1, 1, 1]
    finally:
        ThreadingInstrumentor().uninstrument()
    spans = by_name(telemetry)
    assert [parent_name(telemetry, s) for s in spans["execute_tool embed"]] == ["invoke_agent retriever"] * 3
    for span in spans["embeddings text-embedding-3-small"]:
        assert parent_name(telemetry, span) == "execute_tool embed"
        assert span.attributes["session.id"] == "s-9"
    assert spans["invoke_agent retriever"][0].attributes["llmtel.agent.llm_calls"] == 3
    assert spans["invoke_agent retriever"][0].attributes["llmtel.agent.tool_calls"] == 3


async def test_asyncio_gather_and_task_group(aclient, telemetry):
    @agent("researcher")
    async def research(topic: str) -> str:
        result = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return result.choices[0].message.content

    async with context(user_id="u-2", tags=["async"]), workflow("fan-out"):
        await asyncio.gather(research("a"), research("b"))
        async with asyncio.TaskGroup() as group:
            group.create_task(research("c"))
            group.create_task(research("d"))
    spans = by_name(telemetry)
    agents = spans["invoke_agent researcher"]
    assert len(agents) == 4
    assert {parent_name(telemetry, s) for s in agents} == {"invoke_workflow fan-out"}
    agent_ids = {s.context.span_id for s in agents}
    llm = spans["chat gpt-4o-mini"]
    assert {s.parent.span_id for s in llm} == agent_ids
    assert all(s.attributes["user.id"] == "u-2" and s.attributes["llmtel.tags"] == ("async",) for s in llm)
    assert spans["invoke_workflow fan-out"][0].attributes["llmtel.workflow.llm_calls"] == 4


def test_nested_contexts_merge_inner_wins(client, telemetry):
    with context(user_id="outer", session_id="s1", tags=["a"], metadata={"plan": "pro", "n": 1}):
        with context(user_id="inner", conversation_id="c7", tags=["b", "a"], metadata={"n": 2}):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    inner, outer, outside = (dict(s.attributes) for s in telemetry.llm_spans())
    assert inner["user.id"] == "inner" and inner["session.id"] == "s1"
    assert inner["gen_ai.conversation.id"] == "c7"
    assert inner["llmtel.tags"] == ("a", "b")
    assert inner["llmtel.metadata.plan"] == "pro" and inner["llmtel.metadata.n"] == 2
    assert outer["user.id"] == "outer" and outer["llmtel.metadata.n"] == 1 and "gen_ai.conversation.id" not in outer
    assert not {k for k in outside if k.startswith(("user.", "session.", "llmtel."))}


def test_context_reaches_spans_of_other_instrumentations(telemetry):
    tracer = telemetry.tracer_provider.get_tracer("someone-else")
    with context(user_id="u-5", tags=["x"]), tracer.start_as_current_span("db query"):
        pass
    (span,) = telemetry.finished()
    assert span.attributes["user.id"] == "u-5" and span.attributes["llmtel.tags"] == ("x",)


def test_context_attributes_are_set_before_processors_added_later_see_the_span(telemetry):
    from opentelemetry import context as otel_context
    from opentelemetry.sdk.trace import SpanProcessor

    class StartRecorder(SpanProcessor):
        def __init__(self) -> None:
            self.seen: list[tuple[str, object]] = []

        def on_start(self, span, parent_context=None) -> None:
            self.seen.append((span.name, span.attributes.get("user.id")))

    provider = telemetry.tracer_provider
    with context(user_id="u-1"):
        pass
    recorder = StartRecorder()
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("someone-else")
    with context(user_id="u-2"):
        inside = otel_context.get_current()
        tracer.start_span("inside").end()
    tracer.start_span("outside").end()
    tracer.start_span("explicit parent context", context=inside).end()
    assert recorder.seen == [("inside", "u-2"), ("outside", None), ("explicit parent context", "u-2")]


def _context_processors(provider) -> list:
    from llmtel.instrumentation.processors import ContextSpanProcessor

    return [p for p in provider._active_span_processor._span_processors if isinstance(p, ContextSpanProcessor)]


def test_context_processor_is_in_the_span_path_only_while_a_context_is_alive():
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llmtel.instrumentation.processors import add_context_processor

    gc.collect()  # contexts the earlier tests left in reference cycles (asyncio, thread pools) are freed
    exporter = InMemorySpanExporter()
    provider = TracerProvider(active_span_processor=SynchronousMultiSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    add_context_processor(provider)
    add_context_processor(provider)
    tracer = provider.get_tracer("t")
    tracer.start_span("before").end()  # no context alive anywhere: nothing of ours on the path
    assert _context_processors(provider) == []
    with context(session_id="s-9"):
        # In once, and first: every other processor's on_start sees the attributes.
        processors = provider._active_span_processor._span_processors
        assert len(_context_processors(provider)) == 1 and processors[0] is _context_processors(provider)[0]
        tracer.start_span("work").end()
    # Out once STEP_OUT_AFTER spans have started with no context alive (not at the first: an app
    # alternating contexts and lone spans would step in and out on every request).
    for _ in range(STEP_OUT_AFTER - 1):
        tracer.start_span("outside").end()
    assert len(_context_processors(provider)) == 1
    tracer.start_span("outside").end()
    assert _context_processors(provider) == []
    tracer.start_span("outside again").end()
    with context(session_id="s-10"):
        tracer.start_span("work again").end()
    spans = {s.name: dict(s.attributes) for s in exporter.get_finished_spans()}
    assert spans["work"]["session.id"] == "s-9" and spans["work again"]["session.id"] == "s-10"
    assert all("session.id" not in spans[name] for name in ("before", "outside", "outside again"))
    provider.shutdown()


def test_context_kept_by_a_task_outliving_its_with_block_still_reaches_its_spans(telemetry):
    tracer = telemetry.tracer_provider.get_tracer("someone-else")

    async def later(started: asyncio.Event, go_on: asyncio.Event) -> None:
        started.set()
        await go_on.wait()
        tracer.start_span("in the background").end()

    async def main() -> None:
        started, go_on = asyncio.Event(), asyncio.Event()
        with context(user_id="u-bg"):
            task = asyncio.get_running_loop().create_task(later(started, go_on))
            await started.wait()
        tracer.start_span("request done").end()  # no context here, but the task's is alive
        assert _context_processors(telemetry.tracer_provider)
        go_on.set()
        await task
        del task
        await asyncio.sleep(0)  # the loop drops the finished task's last callback handle
        gc.collect()  # and a finished task can sit in a reference cycle until the collector runs
        for _ in range(STEP_OUT_AFTER):
            tracer.start_span("after the task").end()  # the task's context is gone: out of the path
        assert not _context_processors(telemetry.tracer_provider)

    asyncio.run(main())
    spans = {s.name: dict(s.attributes) for s in telemetry.finished()}
    assert spans["in the background"]["user.id"] == "u-bg"
    assert "user.id" not in spans["request done"] and "user.id" not in spans["after the task"]


def test_contexts_and_spans_outside_on_many_threads_at_once(telemetry):
    """Contexts open and close on some threads while spans start outside any on others (the
    processor steps in and out all the time): every span inside a context has its attributes,
    none outside has them."""
    tracer = telemetry.tracer_provider.get_tracer("someone-else")
    stop = threading.Event()

    def inside(worker: int) -> None:
        for number in range(300):
            with context(user_id=f"u-{worker}"):
                tracer.start_span(f"in {worker} {number}").end()

    def outside() -> None:
        while not stop.is_set():
            tracer.start_span("out").end()

    others = [threading.Thread(target=outside) for _ in range(2)]
    for thread in others:
        thread.start()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(inside, range(4)))
    stop.set()
    for thread in others:
        thread.join()
    spans = telemetry.finished()
    inside_spans = [s for s in spans if s.name.startswith("in ")]
    assert len(inside_spans) == 1200
    assert all(s.attributes.get("user.id") == f"u-{s.name.split()[1]}" for s in inside_spans)
    assert all("user.id" not in s.attributes for s in spans if s.name == "out")


def test_hashed_user_id(fake_openai):
    from telemetry_capture import TelemetryCapture

    capture = TelemetryCapture()
    env = {"OTEL_INSTRUMENTATION_LLMTEL_HASH_USER_ID": "true", "OTEL_INSTRUMENTATION_LLMTEL_USER_ID_SALT": "pepper"}
    with capture.instrumented(**env), context(user_id="alice@example.com"), workflow("w"):
        pass
    (span,) = capture.finished()
    assert span.attributes["user.id"] == hashlib.sha256(b"pepperalice@example.com").hexdigest()
    assert "alice" not in json.dumps(dict(span.attributes))


def test_workflow_nests_under_an_active_server_span(telemetry):
    tracer = telemetry.tracer_provider.get_tracer("web")
    with tracer.start_as_current_span("GET /chat", kind=SpanKind.SERVER), workflow("chat-request"):
        pass
    assert parent_name(telemetry, by_name(telemetry)["invoke_workflow chat-request"][0]) == "GET /chat"


def test_same_scope_object_reused_concurrently(telemetry):
    shared = agent("shared")

    async def run(depth: int) -> None:
        async with shared:
            await asyncio.sleep(0)
            if depth:
                await run(depth - 1)

    async def main() -> None:
        await asyncio.gather(run(1), run(2))

    asyncio.run(main())
    spans = telemetry.finished()
    assert len(spans) == 5
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_llm_and_tool_spans_carry_the_innermost_agent_name(client, telemetry):
    @tool()
    def search() -> str:
        return "found"

    with agent("planner"):
        with workflow("sub-job"):  # a workflow inside an agent keeps the agent's name
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        with agent("researcher"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            search()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    under_planner, under_researcher, outside = by_name(telemetry)["chat gpt-4o-mini"]
    assert under_planner.attributes["gen_ai.agent.name"] == "planner"
    assert under_researcher.attributes["gen_ai.agent.name"] == "researcher"
    assert "gen_ai.agent.name" not in outside.attributes
    (tool_span,) = by_name(telemetry)["execute_tool search"]
    assert tool_span.attributes["gen_ai.agent.name"] == "researcher"
    (inner,) = by_name(telemetry)["invoke_agent researcher"]
    assert inner.attributes["gen_ai.agent.name"] == "researcher"


def test_context_functions_fall_back_to_the_public_api_with_another_runtime_context(monkeypatch):
    from opentelemetry import context as otel_context

    from llmtel.instrumentation import api

    default = api._runtime_context_functions()
    assert default[0].__self__ is otel_context._RUNTIME_CONTEXT._current_context  # the fast path here

    class OtherRuntime:  # what OTEL_PYTHON_CONTEXT could load instead of the ContextVar runtime
        _current_context = object()

    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", OtherRuntime())
    assert api._runtime_context_functions() == (otel_context.get_current, otel_context.attach, otel_context.detach)


def test_a_context_left_from_another_execution_context_does_not_raise(caplog):
    import contextvars

    entered = context(user_id="u-x")
    contextvars.copy_context().run(entered.__enter__)  # entered in a copy, left here: reset refuses
    with caplog.at_level("ERROR", logger="opentelemetry.context"):
        entered.__exit__(None, None, None)
    assert "Failed to detach context" in caplog.text  # OpenTelemetry's own message, as for its detach
