"""The openai instrumentation against the real openai client and the local fake API."""

from __future__ import annotations

import gc
import io
import json

import openai
import pytest
from conftest import API_KEY
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from llmtel.instrumentation import openai_attributes, stream_state
from llmtel.instrumentation.cost import PriceTable
from llmtel.instrumentation.openai_instrumentor import OpenAIInstrumentor

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
_VOLATILE = {"id", "created", "created_at", "completed_at", "item_id", "response_id", "_request_id"}


def normalize(value):
    """A comparable form of a return value: ids and timestamps (random per request) blanked."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_unset=True)
    if isinstance(value, dict):
        return {k: (None if k in _VOLATILE else normalize(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, str) and value[:4] in ("chat", "resp", "msg_", "call", "modr", "cmpl"):
        return value.split("-")[0].split("_")[0]
    return value


def _comparable(result):
    if isinstance(result, bytes):
        return result
    if hasattr(result, "content") and isinstance(result.content, bytes):  # speech
        return result.content
    return normalize(result)


# ---------------------------------------------------------------------------------------
# One case per covered method: how to call it (sync and async), and what its span says.

AUDIO = ("speech.mp3", io.BytesIO(b"ID3" + bytes(2000)), "audio/mpeg")
PNG = ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png")


def _audio():
    return ("speech.mp3", b"ID3" + bytes(2000), "audio/mpeg")


CASES = {
    "chat": (
        lambda c: c.chat.completions,
        "create",
        dict(model="gpt-4o-mini", messages=MESSAGES, temperature=0.3, top_p=0.9, max_tokens=50, seed=7,
             stop=["END"], frequency_penalty=0.1, presence_penalty=0.2, n=2, service_tier="auto"),
        "chat",
        {
            "gen_ai.request.temperature": 0.3,
            "gen_ai.request.top_p": 0.9,
            "gen_ai.request.max_tokens": 50,
            "gen_ai.request.seed": 7,
            "gen_ai.request.stop_sequences": ("END",),
            "gen_ai.request.frequency_penalty": 0.1,
            "gen_ai.request.presence_penalty": 0.2,
            "gen_ai.request.choice.count": 2,
            "openai.request.service_tier": "auto",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.finish_reasons": ("stop", "stop"),
            "gen_ai.output.type": "text",
        },
    ),
    "responses": (
        lambda c: c.responses,
        "create",
        dict(model="gpt-4o-mini", input="Say hello", instructions="Be brief.", max_output_tokens=40),
        "chat",
        {"gen_ai.request.max_tokens": 40, "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
         "gen_ai.response.finish_reasons": ("stop",)},
    ),
    "embeddings": (
        lambda c: c.embeddings,
        "create",
        dict(model="text-embedding-3-small", input=["one", "two"], dimensions=256),
        "embeddings",
        {"gen_ai.embeddings.dimension.count": 256, "gen_ai.request.encoding_formats": ("float",)},
    ),
    "transcription": (
        lambda c: c.audio.transcriptions,
        "create",
        dict(model="whisper-1", file=None, response_format="verbose_json"),
        "transcription",
        {"gen_ai.output.type": "text"},
    ),
    "translation": (
        lambda c: c.audio.translations,
        "create",
        dict(model="whisper-1", file=None, response_format="verbose_json"),
        "translation",
        {},
    ),
    "speech": (
        lambda c: c.audio.speech,
        "create",
        dict(model="gpt-4o-mini-tts", voice="alloy", input="Hello there"),
        "speech",
        {"gen_ai.output.type": "speech"},
    ),
    "image_generation": (
        lambda c: c.images,
        "generate",
        dict(model="gpt-image-1", prompt="A red square", n=2),
        "image_generation",
        {"llmtel.images.count": 2, "gen_ai.request.choice.count": 2, "gen_ai.output.type": "image"},
    ),
    "image_edit": (
        lambda c: c.images,
        "edit",
        dict(model="gpt-image-1", prompt="Make it blue", image=None),
        "image_edit",
        {"llmtel.images.count": 1},
    ),
    "moderation": (
        lambda c: c.moderations,
        "create",
        dict(model="omni-moderation-latest", input="I like kittens"),
        "moderation",
        {},
    ),
}


def _kwargs(case: str) -> dict:
    kwargs = dict(CASES[case][2])
    if "file" in kwargs:
        kwargs["file"] = _audio()
    if "image" in kwargs:
        kwargs["image"] = PNG
    return kwargs


def _call(resource, method: str, form: str, kwargs: dict):
    """Call in one of the three forms and return what the caller ends up with."""
    if form == "plain":
        return getattr(resource, method)(**kwargs)
    if form == "raw":
        return getattr(resource.with_raw_response, method)(**kwargs).parse()
    with getattr(resource.with_streaming_response, method)(**kwargs) as response:
        return response.parse()


async def _acall(resource, method: str, form: str, kwargs: dict):
    if form == "plain":
        return await getattr(resource, method)(**kwargs)
    if form == "raw":
        return (await getattr(resource.with_raw_response, method)(**kwargs)).parse()
    async with getattr(resource.with_streaming_response, method)(**kwargs) as response:
        return await response.parse()


def _check_span(span, case: str, fake_openai) -> None:
    _, _, kwargs, operation, expected = CASES[case]
    model = kwargs["model"]
    assert span.name == f"{operation} {model}"
    assert span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes)
    assert attrs["gen_ai.operation.name"] == operation
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == model
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == int(fake_openai.base_url.split(":")[2].split("/")[0])
    for key, value in expected.items():
        assert attrs.get(key) == value, (key, attrs.get(key))
    assert span.status.status_code is not StatusCode.ERROR
    assert "error.type" not in attrs


@pytest.mark.parametrize("form", ["plain", "raw", "streaming_response"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_sync_call_span_and_identical_result(case, form, client, fake_openai):
    from telemetry_capture import TelemetryCapture

    resource = CASES[case][0](client)
    method = CASES[case][1]
    fake_openai.reset()
    bare = _call(resource, method, form, _kwargs(case))
    capture = TelemetryCapture()
    with capture.instrumented():
        fake_openai.reset()
        # A new client: the SDK caches `with_raw_response` wrappers per client, bound to the
        # methods as they were when first used.
        fresh = openai.OpenAI(base_url=fake_openai.base_url, api_key=API_KEY)
        instrumented = _call(CASES[case][0](fresh), method, form, _kwargs(case))
    assert type(instrumented) is type(bare)
    assert _comparable(instrumented) == _comparable(bare)
    span = capture.only_span()
    _check_span(span, case, fake_openai)
    assert capture.end_counter.ends[span.context.span_id] == 1


@pytest.mark.parametrize("form", ["plain", "raw", "streaming_response"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_async_call_span_and_identical_result(case, form, aclient, fake_openai):
    from telemetry_capture import TelemetryCapture

    method = CASES[case][1]
    fake_openai.reset()
    bare = await _acall(CASES[case][0](aclient), method, form, _kwargs(case))
    capture = TelemetryCapture()
    with capture.instrumented():
        fake_openai.reset()
        fresh = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key=API_KEY)
        instrumented = await _acall(CASES[case][0](fresh), method, form, _kwargs(case))
    assert type(instrumented) is type(bare)
    assert _comparable(instrumented) == _comparable(bare)
    _check_span(capture.only_span(), case, fake_openai)


def test_usage_and_cost_on_chat(client, telemetry, fake_openai):
    fake_openai.cached_tokens = 4
    fake_openai.reasoning_tokens = 3
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attrs = dict(telemetry.only_span().attributes)
    usage = result.usage
    assert attrs["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 4
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 3
    assert attrs["gen_ai.response.id"] == result.id
    assert attrs["openai.response.system_fingerprint"] == result.system_fingerprint
    assert attrs["openai.response.service_tier"] == result.service_tier
    expected = PriceTable().cost("openai", result.model, usage.prompt_tokens, usage.completion_tokens, 4, 0, 3)
    assert expected is not None and expected > 0
    assert attrs["gen_ai.usage.cost"] == pytest.approx(expected)


def test_unknown_model_gets_no_cost(client, telemetry):
    client.chat.completions.create(model="my-private-model-xyz", messages=MESSAGES)
    attrs = dict(telemetry.only_span().attributes)
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert "gen_ai.usage.cost" not in attrs


def test_embeddings_usage_and_dimensions_from_response(client, telemetry):
    result = client.embeddings.create(model="text-embedding-3-small", input="hello")
    attrs = dict(telemetry.only_span().attributes)
    assert attrs["gen_ai.embeddings.dimension.count"] == len(result.data[0].embedding)
    assert attrs["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert "gen_ai.usage.output_tokens" not in attrs
    assert attrs["gen_ai.usage.cost"] > 0


def test_audio_duration_recorded(client, telemetry):
    result = client.audio.transcriptions.create(model="whisper-1", file=_audio(), response_format="verbose_json")
    assert dict(telemetry.only_span().attributes)["llmtel.audio.duration"] == pytest.approx(result.duration)


# ---------------------------------------------------------------------------------------
# Streams


def _stream_kwargs(**extra):
    return dict(model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra)


def test_stream_exact_usage_without_changing_the_chunks(client, fake_openai):
    from telemetry_capture import TelemetryCapture

    fake_openai.reset()
    bare = [normalize(c) for c in client.chat.completions.create(**_stream_kwargs())]
    assert "include_usage" not in json.dumps(fake_openai.requests[-1].json)
    capture = TelemetryCapture()
    with capture.instrumented():
        stream = client.chat.completions.create(**_stream_kwargs())
        assert isinstance(stream, openai.Stream)
        chunks = list(stream)
    assert fake_openai.requests[-1].json["stream_options"] == {"include_usage": True}
    assert [normalize(c) for c in chunks] == bare
    assert all(c.choices for c in chunks)  # the usage-only chunk stays hidden
    attrs = dict(capture.only_span().attributes)
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert 0 < attrs["gen_ai.response.time_to_first_chunk"] < 5


def test_stream_usage_asked_by_caller_is_passed_through(client, telemetry, fake_openai):
    chunks = list(client.chat.completions.create(**_stream_kwargs(stream_options={"include_usage": True})))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert dict(telemetry.only_span().attributes)["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens


def test_stream_usage_injection_can_be_turned_off(client, fake_openai):
    from telemetry_capture import TelemetryCapture

    capture = TelemetryCapture()
    with capture.instrumented(OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE="false"):
        list(client.chat.completions.create(**_stream_kwargs()))
    assert "stream_options" not in fake_openai.requests[-1].json
    attrs = dict(capture.only_span().attributes)
    assert "gen_ai.usage.input_tokens" not in attrs  # unknown, never 0
    assert not capture.metric_points("gen_ai.client.token.usage")


def _assert_ended_once_and_detached(telemetry, error: bool = False):
    span = telemetry.only_span()
    assert telemetry.end_counter.ends[span.context.span_id] == 1
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert (span.status.status_code is StatusCode.ERROR) is error
    return span


def test_stream_exhausted(client, telemetry):
    stream = client.chat.completions.create(**_stream_kwargs())
    assert trace.get_current_span() is trace.INVALID_SPAN  # never left attached to the caller
    assert not telemetry.llm_spans()
    for _ in stream:
        assert trace.get_current_span() is trace.INVALID_SPAN
    _assert_ended_once_and_detached(telemetry)


def test_stream_break_and_close(client, telemetry, fake_openai):
    fake_openai.stream_chunks = 20
    stream = client.chat.completions.create(**_stream_kwargs())
    for _ in stream:
        break
    assert not telemetry.llm_spans()
    stream.close()
    stream.close()
    span = _assert_ended_once_and_detached(telemetry)
    assert "gen_ai.response.time_to_first_chunk" in span.attributes


def test_stream_context_manager_exit(client, telemetry):
    with client.chat.completions.create(**_stream_kwargs()) as stream:
        next(iter(stream))
    _assert_ended_once_and_detached(telemetry)


def test_stream_error_midway(client, telemetry, fake_openai):
    fake_openai.stream_chunks = 20
    fake_openai.break_stream_after(3)
    stream = client.chat.completions.create(**_stream_kwargs())
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    span = _assert_ended_once_and_detached(telemetry, error=True)
    assert span.attributes["error.type"]
    assert any(event.name == "exception" for event in span.events)


def test_stream_abandoned_is_ended_by_gc(client, telemetry, fake_openai):
    fake_openai.stream_chunks = 20
    stream = client.chat.completions.create(**_stream_kwargs())
    next(iter(stream))
    del stream
    gc.collect()
    _assert_ended_once_and_detached(telemetry)


def test_stream_helper_context_manager(client, telemetry):
    with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    span = _assert_ended_once_and_detached(telemetry)
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert final.usage is None  # the caller did not ask for usage, so sees none
    assert span.attributes["gen_ai.usage.output_tokens"] > 0


def test_stream_helper_closed_early(client, telemetry, fake_openai):
    fake_openai.stream_chunks = 30
    with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        for _ in stream:
            break
    _assert_ended_once_and_detached(telemetry)


def test_responses_stream_and_helper(client, telemetry):
    events = list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    with client.responses.stream(model="gpt-4o-mini", input="hi") as stream:
        for _ in stream:
            pass
    spans = telemetry.llm_spans()
    assert len(spans) == 2
    final = events[-1].response
    for span in spans:
        attrs = dict(span.attributes)
        assert attrs["gen_ai.usage.input_tokens"] == final.usage.input_tokens
        assert attrs["gen_ai.usage.output_tokens"] == final.usage.output_tokens
        assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
        assert "gen_ai.response.time_to_first_chunk" in attrs
        assert telemetry.end_counter.ends[span.context.span_id] == 1


async def test_async_stream_paths(aclient, telemetry, fake_openai):
    fake_openai.stream_chunks = 10
    stream = await aclient.chat.completions.create(**_stream_kwargs())
    assert isinstance(stream, openai.AsyncStream)
    chunks = [c async for c in stream]
    assert chunks and all(c.choices for c in chunks)
    stream = await aclient.chat.completions.create(**_stream_kwargs())
    async for _ in stream:
        break
    await stream.close()
    async with await aclient.chat.completions.create(**_stream_kwargs()) as stream:
        await stream.__anext__()
    async with aclient.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as helper:
        async for _ in helper:
            pass
    spans = telemetry.llm_spans()
    assert len(spans) == 4
    assert all(telemetry.end_counter.ends[s.context.span_id] == 1 for s in spans)
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert spans[0].attributes["gen_ai.usage.output_tokens"] > 0


# ---------------------------------------------------------------------------------------
# Failures, retries, and our own bugs


def test_error_marks_span_and_reraises_unchanged(client, telemetry, fake_openai):
    fake_openai.fail_next(400)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    span = telemetry.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "BadRequestError"
    assert span.attributes["http.response.status_code"] == 400
    exception_events = [e for e in span.events if e.name == "exception"]
    assert exception_events[0].attributes["exception.message"] == str(caught.value)
    (metric, point), = telemetry.metric_points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "BadRequestError"


def test_retries_are_visible(client, telemetry, fake_openai):
    fake_openai.fail_next(429, headers={"retry-after-ms": "1"})
    fake_openai.drop_connection_next()
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices
    span = telemetry.only_span()
    assert span.attributes["llmtel.request.attempts"] == 3
    retries = [e for e in span.events if e.name == "llmtel.retry"]
    assert [e.attributes["llmtel.retry.attempt"] for e in retries] == [1, 2]
    assert retries[0].attributes["http.response.status_code"] == 429
    assert retries[1].attributes["error.type"]  # the connection error's class
    assert span.status.status_code is not StatusCode.ERROR


def test_our_extraction_errors_never_reach_the_caller(client, telemetry, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("bug in llmtel")

    monkeypatch.setattr(openai_attributes, "_usage_chat", broken)
    monkeypatch.setattr(stream_state.ChatStreamState, "on_chunk", broken)
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    chunks = list(client.chat.completions.create(**_stream_kwargs()))
    assert result.choices[0].message.content and chunks
    assert len(telemetry.llm_spans()) == 2  # spans still end

    from llmtel.instrumentation import invocation

    monkeypatch.setattr(invocation.Invocation, "__init__", broken)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices


def test_user_exception_inside_stream_loop_passes_through(client, telemetry):
    with pytest.raises(KeyError), client.chat.completions.create(**_stream_kwargs()) as stream:
        for _ in stream:
            raise KeyError("the app's own error")
    _assert_ended_once_and_detached(telemetry)


# ---------------------------------------------------------------------------------------
# Instrumentor behaviour


def test_instrument_and_uninstrument_are_idempotent_and_reversible(client, fake_openai):
    from openai.resources.chat.completions import Completions
    from telemetry_capture import TelemetryCapture

    original = Completions.create
    capture = TelemetryCapture()
    with capture.instrumented():
        OpenAIInstrumentor().instrument(tracer_provider=capture.tracer_provider)  # second call: no-op
        assert Completions.create is not original
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert len(capture.llm_spans()) == 1
    OpenAIInstrumentor().uninstrument()  # second call: no-op
    assert Completions.create is original
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    openai.OpenAI(base_url=fake_openai.base_url, api_key="k").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert len(capture.llm_spans()) == 1


def test_suppress_instrumentation_is_honoured(client, telemetry):
    with suppress_instrumentation():
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert not telemetry.llm_spans()


def test_span_parents_to_the_callers_span(client, telemetry):
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as parent:
        token_before = otel_context.get_current()
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert otel_context.get_current() == token_before
    span = telemetry.only_span()
    assert span.parent.span_id == parent.get_span_context().span_id


def test_httpx_client_span_is_suppressed_under_the_llm_span(fake_openai):
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from telemetry_capture import TelemetryCapture

    capture = TelemetryCapture()
    HTTPXClientInstrumentor().instrument(tracer_provider=capture.tracer_provider)
    try:
        http_client = httpx.Client()
        legacy = openai.OpenAI(base_url=fake_openai.base_url, api_key=API_KEY, http_client=http_client)
        with capture.instrumented():
            legacy.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            names = [s.name for s in capture.finished()]
            assert names == ["chat gpt-4o-mini"], names
            http_client.get(fake_openai.url + "/v1/models")  # outside an LLM span: traced as usual
            assert len(capture.finished()) == 2
    finally:
        HTTPXClientInstrumentor().uninstrument()


@pytest.mark.parametrize(
    ("base_url", "provider"),
    [
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://api.deepseek.com", "deepseek"),
        ("https://api.together.xyz/v1", "together_ai"),
        ("https://api.mistral.ai/v1", "mistral_ai"),
        ("https://api.x.ai/v1", "x_ai"),
        ("https://api.perplexity.ai", "perplexity"),
        ("https://myres.openai.azure.com/openai/v1", "azure.ai.openai"),
        ("https://gateway.internal.example:8443/v1", "openai"),
        ("http://localhost:11434/v1", "openai"),
    ],
)
def test_provider_from_host(base_url, provider):
    from llmtel.instrumentation.providers import endpoint_of_client

    endpoint = endpoint_of_client(openai.OpenAI(base_url=base_url, api_key="k"))
    assert endpoint.provider == provider
    assert endpoint.address == base_url.split("/")[2].split(":")[0]


def test_azure_client(fake_openai, telemetry):
    azure = openai.AzureOpenAI(azure_endpoint=fake_openai.url, api_version="2024-10-21", api_key=API_KEY)
    azure.chat.completions.create(model="my-gpt4o-deployment", messages=MESSAGES)
    attrs = dict(telemetry.only_span().attributes)
    assert attrs["gen_ai.provider.name"] == "azure.ai.openai"
    assert attrs["server.address"] == "127.0.0.1"


# ---------------------------------------------------------------------------------------
# Content, secrets, metrics, structured outputs


def _all_telemetry_text(capture) -> str:
    parts = []
    for span in capture.finished():
        parts.append(json.dumps(dict(span.attributes), default=str))
        parts.extend(json.dumps(dict(e.attributes or {}), default=str) for e in span.events)
    for record in capture.logs.get_finished_logs():
        parts.append(json.dumps(dict(record.log_record.attributes or {}), default=str))
    return "\n".join(parts)


def test_no_content_by_default_and_never_secrets(client, telemetry):
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attrs = dict(telemetry.only_span().attributes)
    assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"} & set(attrs)
    text = _all_telemetry_text(telemetry)
    assert "Say hello" not in text and API_KEY not in text


@pytest.mark.parametrize("mode", ["true", "span_only", "span_and_event", "event_only"])
def test_content_capture_modes(mode, client, fake_openai):
    from telemetry_capture import TelemetryCapture

    capture = TelemetryCapture()
    fake_openai.reply_text = "Hello there!"
    with capture.instrumented(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=mode):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        list(client.chat.completions.create(**_stream_kwargs()))
    on_span = mode != "event_only"
    events = capture.logs.get_finished_logs()
    for span in capture.llm_spans():
        attrs = dict(span.attributes)
        assert ("gen_ai.input.messages" in attrs) is on_span
        if on_span:
            assert json.loads(attrs["gen_ai.input.messages"])[-1]["parts"][0]["content"] == "Say hello"
            assert json.loads(attrs["gen_ai.system_instructions"])[0]["content"] == "Be brief."
            output = json.loads(attrs["gen_ai.output.messages"])
            assert output[0]["parts"][0]["content"] == "Hello there!"
    assert bool(events) is (mode in ("event_only", "span_and_event"))
    for record in events:
        assert record.log_record.event_name == "gen_ai.client.inference.operation.details"
    assert API_KEY not in _all_telemetry_text(capture)


def test_content_truncated_at_configured_length(client, fake_openai):
    from telemetry_capture import TelemetryCapture

    capture = TelemetryCapture()
    with capture.instrumented(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true",
                              OTEL_INSTRUMENTATION_LLMTEL_CONTENT_MAX_LENGTH="10"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 100}])
    content = json.loads(capture.only_span().attributes["gen_ai.input.messages"])[0]["parts"][0]["content"]
    assert content.startswith("x" * 10) and "truncated" in content and len(content) < 60


def test_metrics_use_semconv_names_units_and_buckets(client, telemetry):
    from llmtel.instrumentation import semconv

    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    list(client.chat.completions.create(**_stream_kwargs()))
    client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hi")  # no tokens
    durations = telemetry.metric_points("gen_ai.client.operation.duration")
    metric = durations[0][0]
    assert metric.unit == "s"
    assert tuple(durations[0][1].explicit_bounds) == semconv.DURATION_BUCKETS
    assert sum(p.count for _, p in durations) == 3
    tokens = telemetry.metric_points("gen_ai.client.token.usage")
    assert tokens[0][0].unit == "{token}"
    assert tuple(tokens[0][1].explicit_bounds) == tuple(float(b) for b in semconv.TOKEN_BUCKETS)
    assert {p.attributes["gen_ai.token.type"] for _, p in tokens} == {"input", "output"}
    assert sum(p.count for _, p in tokens) == 4  # two calls with usage x (input, output); none for speech
    assert all(p.attributes["gen_ai.operation.name"] == "chat" for _, p in tokens)
    first_chunk = telemetry.metric_points("gen_ai.client.operation.time_to_first_chunk")
    assert sum(p.count for _, p in first_chunk) == 1


SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["city", "population"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize(
    ("reply", "valid", "error"),
    [
        ('{"city": "Paris", "population": 2100000}', True, None),
        ('{"city": "Paris", "population": "many"}', False, "$.population: expected integer"),
        ('{"city": "Paris"', False, "output is not JSON"),
    ],
)
def test_structured_output_checked(reply, valid, error, client, telemetry, fake_openai):
    fake_openai.json_reply = reply
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, response_format=SCHEMA)
    attrs = dict(telemetry.only_span().attributes)
    assert attrs["gen_ai.output.type"] == "json"
    assert attrs["llmtel.output.valid"] is valid
    if error:
        assert attrs["llmtel.output.error"].startswith(error)


def test_parse_with_pydantic_model(client, telemetry, fake_openai):
    from pydantic import BaseModel

    class City(BaseModel):
        city: str
        population: int

    fake_openai.json_reply = '{"city": "Paris", "population": 2100000}'
    parsed = client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=City)
    assert parsed.choices[0].message.parsed == City(city="Paris", population=2100000)
    assert telemetry.only_span().attributes["llmtel.output.valid"] is True

    fake_openai.json_reply = '{"city": "Paris", "population": "many"}'
    with pytest.raises(Exception) as caught:
        client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=City)
    span = telemetry.llm_spans()[-1]
    assert span.attributes["llmtel.output.valid"] is False
    assert span.attributes["error.type"] == type(caught.value).__qualname__


def test_transcription_stream_usage(client, telemetry):
    events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=_audio(), stream=True))
    done = events[-1]
    assert done.type == "transcript.text.done"
    span = _assert_ended_once_and_detached(telemetry)
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.usage.input_tokens"] == done.usage.input_tokens
    assert span.attributes["gen_ai.usage.output_tokens"] == done.usage.output_tokens


def test_responses_parse_with_pydantic_model(client, telemetry, fake_openai):
    from pydantic import BaseModel

    class City(BaseModel):
        city: str
        population: int

    fake_openai.json_reply = '{"city": "Paris", "population": 2100000}'
    parsed = client.responses.parse(model="gpt-4o-mini", input="Largest city of France?", text_format=City)
    assert parsed.output_parsed == City(city="Paris", population=2100000)
    attrs = dict(telemetry.only_span().attributes)
    assert attrs["gen_ai.output.type"] == "json"
    assert attrs["llmtel.output.valid"] is True
    assert attrs["gen_ai.usage.input_tokens"] == parsed.usage.input_tokens


def test_tool_definitions_names_only_without_content(client, telemetry, fake_openai):
    fake_openai.tool_calls = [("get_weather", '{"city": "Paris"}')]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "secret prompt text",
                                               "parameters": {"type": "object", "properties": {}}}}]
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=tools)
    assert result.choices[0].finish_reason == "tool_calls"
    attrs = dict(telemetry.only_span().attributes)
    assert json.loads(attrs["gen_ai.tool.definitions"]) == [{"type": "function", "name": "get_weather"}]
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)


@pytest.mark.parametrize(("api_version", "asked"), [("2024-02-01", False), ("2024-06-01", False),
                                                    ("2024-10-21", True), ("2025-01-01-preview", True),
                                                    ("2024-08-01-preview", False)])
def test_azure_stream_usage_only_on_api_versions_that_accept_it(api_version, asked, fake_openai, telemetry):
    azure = openai.AzureOpenAI(azure_endpoint=fake_openai.url, api_version=api_version, api_key=API_KEY)
    chunks = list(azure.chat.completions.create(model="my-deployment", messages=MESSAGES, stream=True))
    assert ("stream_options" in fake_openai.requests[-1].json) is asked
    attrs = dict(telemetry.only_span().attributes)
    assert ("gen_ai.usage.input_tokens" in attrs) is asked
    assert attrs["gen_ai.response.model"] == next(c.model for c in chunks if c.model)


def test_stream_iterated_without_keeping_the_stream(client, telemetry):
    # `for chunk in client...create(stream=True)` holds only the iterator, not the stream object.
    chunks = [c for c in client.chat.completions.create(**_stream_kwargs())]
    assert chunks
    gc.collect()
    span = _assert_ended_once_and_detached(telemetry)
    assert span.attributes["gen_ai.usage.output_tokens"] > 0
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)


def test_stream_iterator_dropped_midway(client, telemetry, fake_openai):
    fake_openai.stream_chunks = 20
    iterator = iter(client.chat.completions.create(**_stream_kwargs()))
    next(iterator)
    del iterator
    gc.collect()
    _assert_ended_once_and_detached(telemetry)


def test_captured_content_replaces_base64_and_keeps_secrets_out(client, fake_openai):
    import base64

    from telemetry_capture import TelemetryCapture

    image = base64.b64encode(b"\x89PNG" + bytes(3000)).decode()
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
    ]}]
    capture = TelemetryCapture()
    with capture.instrumented(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"):
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_headers={"X-Api-Key": API_KEY})
    text = _all_telemetry_text(capture)
    assert image[:40] not in text and API_KEY not in text
    parts = json.loads(capture.only_span().attributes["gen_ai.input.messages"])[0]["parts"]
    assert parts[0] == {"type": "text", "content": "What is in this image?"}
    assert "3004 bytes" in json.dumps(parts[1])
