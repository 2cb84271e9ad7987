"""The fake OpenAI API, driven by the real ``openai`` client over loopback HTTP."""

from __future__ import annotations

import base64
import json
import math
import struct
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from enum import Enum
from typing import Optional

import openai
import pytest
from fake_openai import DEFAULT_REPLY_TEXT, PROMPT_OVERHEAD_TOKENS, FakeOpenAI
from pydantic import BaseModel

MESSAGES = [{"role": "user", "content": "Tell me a joke about opentelemetry"}]
PROMPT_TOKENS = 6 + PROMPT_OVERHEAD_TOKENS  # six words in MESSAGES
# How the fake splits DEFAULT_REPLY_TEXT: token-like pieces, as the real API streams it.
REPLY_PIECES = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
AUDIO = b"RIFF" + bytes(64_000 - 4)  # two seconds at 32 kB/s


@pytest.fixture
def client(fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=2) as c:
        yield c


@pytest.fixture
async def aclient(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=2) as c:
        yield c


@pytest.fixture
def azure(fake_openai: FakeOpenAI) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(azure_endpoint=fake_openai.url, api_version="2024-10-21", api_key="k") as c:
        yield c


def sse_payloads(lines: Iterator[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


# ------------------------------------------------------------------------------------------------
# Server basics
# ------------------------------------------------------------------------------------------------


def test_urls_and_lifecycle() -> None:
    with FakeOpenAI() as fake:
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        assert fake.base_url == fake.url + "/v1"
        with openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as c:
            assert c.models.retrieve("gpt-4o").id == "gpt-4o"
    fake.close()  # twice is fine
    with (
        pytest.raises(openai.APIConnectionError),
        openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as c,
    ):
        c.models.list()


def test_records_requests(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"traceparent": "00-x"})
    request = fake_openai.last_request
    assert (request.method, request.path, request.endpoint) == ("POST", "/v1/chat/completions", "/chat/completions")
    assert request.json == {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert json.loads(request.body) == request.json
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["traceparent"] == "00-x"
    assert request.headers["x-stainless-retry-count"] == "0"
    assert not request.is_azure and request.deployment is None
    assert fake_openai.requests == [request]


def test_reset_forgets_settings_requests_and_failures(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_text = "changed"
    fake_openai.model_aliases["gpt-4o-mini"] = "other"
    fake_openai.fail_next(500, times=5)
    fake_openai.break_stream_after(1)
    fake_openai.reset()
    assert fake_openai.requests == []
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
    assert reply.model == "gpt-4o-mini-2024-07-18"
    assert len(fake_openai.requests) == 1
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_concurrent_requests_are_all_recorded(fake_openai: FakeOpenAI) -> None:
    def worker() -> None:
        with openai.OpenAI(base_url=fake_openai.base_url, api_key="k") as c:
            for _ in range(10):
                c.embeddings.create(model="text-embedding-3-small", input="hello")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake_openai.requests) == 40


def test_unknown_path_and_missing_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.post("/no/such/thing", cast_to=object, body={})
    assert not_found.value.body == {
        "message": "Invalid URL (POST /v1/no/such/thing)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as bad:
        client.post("/chat/completions", cast_to=object, body={"model": "gpt-4o"})
    assert bad.value.code == "missing_required_parameter" and bad.value.param == "messages"


def test_invalid_json_and_azure_without_api_version(fake_openai: FakeOpenAI) -> None:
    def post(path: str, data: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(
            fake_openai.url + path, data=data, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    status, body = post("/v1/chat/completions", b"{not json")
    assert status == 400 and "could not parse the JSON body" in body["error"]["message"]
    status, body = post("/openai/deployments/d/chat/completions", json.dumps({"messages": MESSAGES}).encode())
    assert status == 404 and body["error"]["message"] == "Resource not found"
    status, body = post(
        "/openai/deployments/d/chat/completions?api-version=2024-10-21", json.dumps({"messages": MESSAGES}).encode()
    )
    assert status == 200 and body["model"] == "d"


# ------------------------------------------------------------------------------------------------
# Chat completions
# ------------------------------------------------------------------------------------------------


def test_chat_completion(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["openai-version"] == "2020-10-01"
    assert int(raw.headers["openai-processing-ms"]) >= 1
    assert raw.headers["content-type"] == "application/json"
    body = json.loads(raw.text)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": DEFAULT_REPLY_TEXT, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": len(REPLY_PIECES),
        "total_tokens": PROMPT_TOKENS + len(REPLY_PIECES),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert body["service_tier"] == "default" and body["system_fingerprint"].startswith("fp_")
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.choices[0].message.content == DEFAULT_REPLY_TEXT


def test_chat_model_snapshots(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).model == "gpt-4o-2024-08-06"
    assert client.chat.completions.create(model="my-model", messages=MESSAGES).model == "my-model"
    fake_openai.model_aliases["my-model"] = "my-model-2025-01-01"
    assert client.chat.completions.create(model="my-model", messages=MESSAGES).model == "my-model-2025-01-01"


def test_chat_settings_shape_the_answer(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_text = "Why did the span cross the road?"
    fake_openai.cached_tokens = 1024
    fake_openai.reasoning_tokens = 64
    reply = client.chat.completions.create(model="gpt-5", messages=MESSAGES, n=3, service_tier="priority")
    assert [c.message.content for c in reply.choices] == ["Why did the span cross the road?"] * 3
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.service_tier == "priority"
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens == PROMPT_TOKENS + 1024
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 1024
    assert usage.completion_tokens_details is not None
    # Each of the 3 choices costs its 8 pieces plus its reasoning.
    assert usage.completion_tokens_details.reasoning_tokens == 3 * 64
    assert usage.completion_tokens == 3 * (8 + 64)


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_chat_token_limit_truncates(client: openai.OpenAI, limit: str) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **{limit: 3})
    assert reply.choices[0].message.content == "Hello! How"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_chat_stream_framing_without_usage(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-request-id"].startswith("req_")
        payloads = sse_payloads(response.iter_lines())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]] == REPLY_PIECES
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_chat_stream_with_include_usage(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.cached_tokens = 5
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS + 5, len(REPLY_PIECES))
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 5
    raw = fake_openai.requests  # the raw chunks carry "usage": null until the last one
    assert raw[-1].json["stream_options"] == {"include_usage": True}


def test_stream_chunks_sets_the_number_of_content_chunks(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.stream_chunks = 50
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) == 50
    assert "".join(contents).startswith(DEFAULT_REPLY_TEXT + " Hello! How")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 50
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert plain.choices[0].message.content == "".join(contents)


def test_chat_tool_calls(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.tool_calls = [("get_weather", '{"location":"Paris"}'), ("get_weather", {"location": "Boston"})]
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"location": "Paris"}),
        ("get_weather", {"location": "Boston"}),
    ]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id
    # Without tools in the request, or with tool_choice="none", the model answers in text.
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].finish_reason == "stop"
    none = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="none")
    assert none.choices[0].message.content == DEFAULT_REPLY_TEXT


def test_chat_tool_call_stream(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.tool_calls = [("get_weather", '{"location":"Paris"}'), ("get_time", '{"tz":"CET"}')]
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content is None
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            assert delta.function is not None
            entry["name"] += delta.function.name or ""
            entry["arguments"] += delta.function.arguments or ""
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        ("get_weather", '{"location":"Paris"}'),
        ("get_time", '{"tz":"CET"}'),
    ]
    assert sum(1 for chunk in chunks if (chunk.choices[0].delta.tool_calls or [None])[0] is not None) > 4
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


class Mood(str, Enum):
    happy = "happy"
    sad = "sad"


class Joke(BaseModel):
    setup: str
    rating: int


class Answer(BaseModel):
    jokes: list[Joke]
    mood: Mood
    note: Optional[str]  # noqa: UP045 - pydantic renders this as anyOf with null
    score: float
    ok: bool


def test_chat_parse_builds_json_from_the_schema(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Answer)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer)
    assert parsed.mood is Mood.happy and isinstance(parsed.jokes[0], Joke)
    assert fake_openai.last_request.headers["x-stainless-helper-method"] == "chat.completions.parse"
    fake_openai.json_reply = '{"setup":"Why?","rating":7}'
    again = client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Joke)
    assert again.choices[0].message.parsed == Joke(setup="Why?", rating=7)


def test_chat_parse_refusal(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.refusal = "I'm sorry, I can't help with that."
    message = client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Joke).choices[0].message
    assert message.refusal == "I'm sorry, I can't help with that."
    assert message.content is None and message.parsed is None


def test_chat_stream_helper(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert deltas == ["", *REPLY_PIECES]  # the role chunk's empty content is a delta too
    assert final.choices[0].message.content == DEFAULT_REPLY_TEXT
    fake_openai.json_reply = '{"setup":"Why?","rating":7}'
    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES, response_format=Joke) as stream:
        parsed = stream.get_final_completion().choices[0].message.parsed
    assert parsed == Joke(setup="Why?", rating=7)


async def test_async_chat(aclient: openai.AsyncOpenAI, fake_openai: FakeOpenAI) -> None:
    reply = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
    assert fake_openai.last_request.headers["x-stainless-async"].startswith("async:")
    stream = await aclient.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_REPLY_TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == PROMPT_TOKENS + len(REPLY_PIECES)
    async with aclient.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as helper:
        final = await helper.get_final_completion()
    assert final.choices[0].message.content == DEFAULT_REPLY_TEXT
    parsed = await aclient.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Joke)
    assert isinstance(parsed.choices[0].message.parsed, Joke)


# ------------------------------------------------------------------------------------------------
# Responses API
# ------------------------------------------------------------------------------------------------


def test_responses_create(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.cached_tokens = 10
    response = client.responses.create(
        model="gpt-4.1-nano", input="What is the capital of France?", instructions="Be brief", temperature=0.5
    )
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.model == "gpt-4.1-nano-2025-04-14"
    assert response.output_text == DEFAULT_REPLY_TEXT
    assert response.output[0].type == "message" and response.output[0].id.startswith("msg_")
    assert response.instructions == "Be brief" and response.temperature == 0.5
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == 6 + 2 + PROMPT_OVERHEAD_TOKENS + 10
    assert usage.input_tokens_details.cached_tokens == 10
    assert usage.output_tokens == len(REPLY_PIECES)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_responses_reasoning_and_truncation(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.reasoning_tokens = 320
    response = client.responses.create(model="gpt-5-nano", input="Count r's in strawberry", reasoning={"effort": "low"})
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.reasoning is not None and response.reasoning.effort == "low"
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 320
    assert response.usage.output_tokens == len(REPLY_PIECES) + 320
    fake_openai.reasoning_tokens = 0
    cut = client.responses.create(model="gpt-4o", input="hi", max_output_tokens=2)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == "Hello!"


def test_responses_function_calls(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.tool_calls = [("get_weather", '{"location":"London"}')]
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
    response = client.responses.create(model="gpt-4.1-nano", input="Weather in London?", tools=[tool])
    [call] = response.output
    assert call.type == "function_call"
    assert (call.name, call.arguments) == ("get_weather", '{"location":"London"}')
    assert call.call_id.startswith("call_") and (call.id or "").startswith("fc_")
    assert response.tools[0].type == "function" and response.tools[0].name == "get_weather"
    with client.responses.stream(model="gpt-4.1-nano", input="Weather?", tools=[tool]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-2:] == ["response.output_item.done", "response.completed"]
    assert final.output[0].type == "function_call" and final.output[0].arguments == '{"location":"London"}'


def test_responses_stream_events(client: openai.OpenAI) -> None:
    with client.responses.with_streaming_response.create(model="gpt-4.1-nano", input="Tell me", stream=True) as raw:
        lines = [line for line in raw.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    payloads = [json.loads(p) for p in sse_payloads(iter(lines))]
    assert names == [p["type"] for p in payloads]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(REPLY_PIECES),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert payloads[0]["response"]["status"] == "in_progress" and payloads[0]["response"]["usage"] is None
    assert payloads[-1]["response"]["usage"]["output_tokens"] == len(REPLY_PIECES)


def test_responses_stream_helper_and_parse(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    with client.responses.stream(model="gpt-4.1-nano", input="Tell me") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == REPLY_PIECES and final.output_text == DEFAULT_REPLY_TEXT
    parsed = client.responses.parse(model="gpt-4.1-nano", input="Extract", text_format=Answer)
    assert isinstance(parsed.output_parsed, Answer)
    assert fake_openai.last_request.json["text"]["format"]["type"] == "json_schema"
    fake_openai.json_reply = '{"setup":"Why?","rating":7}'
    assert client.responses.parse(model="gpt-4.1-nano", input="x", text_format=Joke).output_parsed == Joke(
        setup="Why?", rating=7
    )


def test_responses_refusal(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.refusal = "I can't help with that."
    response = client.responses.create(model="gpt-4o", input="hi")
    [message] = response.output
    assert message.type == "message" and message.content[0].type == "refusal"
    assert message.content[0].refusal == "I can't help with that."
    with client.responses.stream(model="gpt-4o", input="hi") as stream:
        refusal = "".join(event.delta for event in stream if event.type == "response.refusal.delta")
    assert refusal == "I can't help with that."


async def test_async_responses(aclient: openai.AsyncOpenAI) -> None:
    response = await aclient.responses.create(model="gpt-4o", input="hi")
    assert response.output_text == DEFAULT_REPLY_TEXT
    stream = await aclient.responses.create(model="gpt-4o", input="hi", stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    async with aclient.responses.stream(model="gpt-4o", input="hi") as helper:
        final = await helper.get_final_response()
    assert final.output_text == DEFAULT_REPLY_TEXT


# ------------------------------------------------------------------------------------------------
# Legacy completions, embeddings, moderations, models
# ------------------------------------------------------------------------------------------------


def test_legacy_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=50)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == DEFAULT_REPLY_TEXT and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello! How can"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_embeddings(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    # The client asks for base64 unless told otherwise, and decodes it to floats itself.
    decoded = client.embeddings.create(model="text-embedding-3-small", input="Tell me a joke")
    assert fake_openai.last_request.json["encoding_format"] == "base64"
    floats = client.embeddings.create(model="text-embedding-3-small", input="Tell me a joke", encoding_format="float")
    assert decoded.data[0].embedding == floats.data[0].embedding
    assert len(floats.data[0].embedding) == 1536
    assert math.isclose(math.fsum(x * x for x in floats.data[0].embedding), 1.0, rel_tol=1e-4)
    assert len(set(floats.data[0].embedding)) > 1000
    assert floats.usage.prompt_tokens == 4 and floats.usage.total_tokens == 4
    assert floats.model == "text-embedding-3-small" and floats.object == "list"

    batch = client.embeddings.create(model="text-embedding-3-large", input=["a b", "c"], dimensions=256)
    assert [(d.index, len(d.embedding)) for d in batch.data] == [(0, 256), (1, 256)]
    assert batch.data[0].embedding != batch.data[1].embedding
    assert batch.usage.prompt_tokens == 3
    large = client.embeddings.create(model="text-embedding-3-large", input=[[1, 2, 3]], encoding_format="float")
    assert len(large.data[0].embedding) == 3072 and large.usage.prompt_tokens == 3


def test_embeddings_base64_is_little_endian_float32(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="x", encoding_format="base64"
    )
    encoded = json.loads(raw.text)["data"][0]["embedding"]
    values = struct.unpack("<1536f", base64.b64decode(encoded))
    floats = client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert list(values) == floats.data[0].embedding


def test_moderations(client: openai.OpenAI) -> None:
    result = client.moderations.create(input=["hello", "world"])
    assert result.id.startswith("modr-") and result.model == "omni-moderation-2024-09-26"
    assert len(result.results) == 2
    first = result.results[0]
    assert first.flagged is False and first.categories.hate is False
    assert 0 < first.category_scores.violence < 0.001
    assert first.category_applied_input_types is not None
    assert first.category_applied_input_types.violence == ["text"]
    multimodal = client.moderations.create(
        model="omni-moderation-latest",
        input=[{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
    )
    assert len(multimodal.results) == 1
    applied = multimodal.results[0].category_applied_input_types
    assert applied is not None and applied.violence == ["text", "image"]


def test_models(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert "gpt-4o" in ids and "text-embedding-3-small" in ids
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


# ------------------------------------------------------------------------------------------------
# Audio and images (multipart)
# ------------------------------------------------------------------------------------------------


def test_transcription_json_usage(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    whisper = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", AUDIO))
    assert whisper.text == DEFAULT_REPLY_TEXT
    assert whisper.usage is not None and whisper.usage.type == "duration" and whisper.usage.seconds == 2
    request = fake_openai.last_request
    assert request.form == {"model": "whisper-1"} and request.files == [("file", "a.wav")]
    assert request.json is None and sorted(request.field_names) == ["file", "model"]

    gpt = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", AUDIO), prompt="two words")
    assert gpt.usage is not None and gpt.usage.type == "tokens"
    assert gpt.usage.input_tokens == 20 + 2 and gpt.usage.output_tokens == len(REPLY_PIECES)
    assert gpt.usage.total_tokens == gpt.usage.input_tokens + gpt.usage.output_tokens


def test_transcription_formats(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", AUDIO),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.duration == 2.0 and verbose.language == "english"
    assert verbose.segments is not None and verbose.segments[0].text.strip() == DEFAULT_REPLY_TEXT
    assert verbose.words is not None and verbose.words[0].word == "Hello"
    assert fake_openai.last_request.form["timestamp_granularities[]"] == ["word", "segment"]
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", AUDIO), response_format="text")
    assert text.strip() == DEFAULT_REPLY_TEXT
    srt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", AUDIO), response_format="srt")
    assert "00:00:00,000 --> 00:00:02,000" in srt
    with pytest.deprecated_call():  # openai 3.x marks the translations endpoint deprecated
        translation = client.audio.translations.create(model="whisper-1", file=("a.wav", AUDIO))
    assert translation.text == DEFAULT_REPLY_TEXT
    assert fake_openai.last_request.endpoint == "/audio/translations"


def test_transcription_stream(client: openai.OpenAI) -> None:
    events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", AUDIO), stream=True))
    assert [e.type for e in events] == ["transcript.text.delta"] * len(REPLY_PIECES) + ["transcript.text.done"]
    done = events[-1]
    assert done.type == "transcript.text.done" and done.text == DEFAULT_REPLY_TEXT
    assert done.usage is not None and done.usage.output_tokens == len(REPLY_PIECES)
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", AUDIO), stream=True)


async def test_async_audio(aclient: openai.AsyncOpenAI) -> None:
    transcription = await aclient.audio.transcriptions.create(model="whisper-1", file=("a.wav", AUDIO))
    assert transcription.text == DEFAULT_REPLY_TEXT
    speech = await aclient.audio.speech.create(model="tts-1", voice="alloy", input="Hello there")
    assert len(speech.content) == 2048 + 2 * 96


def test_speech(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    speech = client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="Hello there")
    assert speech.response.headers["content-type"] == "audio/mpeg"
    assert speech.content[:2] == b"\xff\xfb" and len(speech.content) == 2048 + 2 * 96
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello there", response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        assert response.headers["transfer-encoding"] == "chunked"
        assert b"".join(response.iter_bytes()) == speech.content
    assert fake_openai.last_request.json["response_format"] == "wav"
    # With stream_format="sse" the client hands back the raw event stream; it doesn't decode it.
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input="Hi", stream_format="sse"
    ) as response:
        events = [json.loads(p) for p in sse_payloads(response.iter_lines())]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == speech.content[: 2048 + 96]
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == 1 + 7


def test_image_generation(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    dalle = client.images.generate(model="dall-e-3", prompt="a red fox")
    assert dalle.data is not None and dalle.data[0].url is not None
    assert dalle.data[0].revised_prompt == "A detailed image of a red fox" and dalle.usage is None
    gpt = client.images.generate(model="gpt-image-1", prompt="a red fox", n=2, quality="low")
    assert gpt.data is not None and len(gpt.data) == 2
    assert base64.b64decode(gpt.data[0].b64_json or "")[:8] == b"\x89PNG\r\n\x1a\n"
    assert gpt.usage is not None
    assert gpt.usage.input_tokens == 3 + PROMPT_OVERHEAD_TOKENS and gpt.usage.output_tokens == 2 * 272
    assert gpt.usage.input_tokens_details.image_tokens == 0
    assert gpt.quality == "low" and gpt.size == "1024x1024"
    # DALL-E URLs point back at the fake, which serves the image.
    with urllib.request.urlopen(dalle.data[0].url, timeout=5) as png:
        assert png.read()[:4] == b"\x89PNG"


def test_image_edit(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    edit = client.images.edit(
        model="gpt-image-1", image=[("a.png", b"\x89PNG1"), ("b.png", b"\x89PNG2")], prompt="make it blue", n=1
    )
    assert edit.usage is not None and edit.usage.input_tokens_details.image_tokens == 2 * 323
    request = fake_openai.last_request
    assert request.files == [("image[]", "a.png"), ("image[]", "b.png")]
    assert request.form["prompt"] == "make it blue"


# ------------------------------------------------------------------------------------------------
# Azure
# ------------------------------------------------------------------------------------------------


def test_azure_chat(azure: openai.AzureOpenAI, fake_openai: FakeOpenAI) -> None:
    raw = azure.chat.completions.with_raw_response.create(model="my-gpt4o", messages=MESSAGES)
    request = fake_openai.last_request
    assert request.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert request.headers["api-key"] == "k" and "authorization" not in request.headers
    assert request.headers["user-agent"].startswith("AzureOpenAI/Python")
    assert request.is_azure and request.deployment == "my-gpt4o" and request.endpoint == "/chat/completions"
    body = json.loads(raw.text)
    assert body["prompt_filter_results"][0]["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert body["choices"][0]["content_filter_results"]["violence"]["filtered"] is False
    completion = raw.parse()
    assert completion.model == "my-gpt4o" and completion.choices[0].message.content == DEFAULT_REPLY_TEXT


def test_azure_chat_stream(azure: openai.AzureOpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.model_aliases["gpt-4o"] = "gpt-4o-2024-11-20"
    chunks = list(
        azure.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices == [] and chunks[0].id == ""
    assert chunks[0].model_extra is not None and "prompt_filter_results" in chunks[0].model_extra
    assert chunks[1].choices[0].delta.role == "assistant"
    assert (chunks[2].choices[0].model_extra or {})["content_filter_results"]["hate"]["severity"] == "safe"
    assert chunks[1].model == "gpt-4o-2024-11-20"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_REPLY_TEXT
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_azure_other_endpoints(azure: openai.AzureOpenAI, fake_openai: FakeOpenAI) -> None:
    embedding = azure.embeddings.create(model="embed-deployment", input="hi")
    assert len(embedding.data[0].embedding) == 1536
    assert fake_openai.last_request.path == "/openai/deployments/embed-deployment/embeddings"
    response = azure.responses.create(model="gpt-4o-mini", input="hi")
    assert response.output_text == DEFAULT_REPLY_TEXT and response.model == "gpt-4o-mini-2024-07-18"
    assert fake_openai.last_request.path == "/openai/responses"
    with openai.AzureOpenAI(
        azure_endpoint=fake_openai.url, azure_deployment="dep", api_version="2024-10-21", api_key="k"
    ) as pinned:
        pinned.chat.completions.create(model="ignored", messages=MESSAGES)
    assert fake_openai.last_request.deployment == "dep"


# ------------------------------------------------------------------------------------------------
# Failures: status errors, retries, dropped connections, broken streams
# ------------------------------------------------------------------------------------------------


def test_rate_limit_is_retried(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(429)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
    attempts = fake_openai.requests
    assert len(attempts) == 2
    assert [r.headers["x-stainless-retry-count"] for r in attempts] == ["0", "1"]


def test_server_errors_until_retries_run_out(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(500, times=2)
    assert client.embeddings.create(model="text-embedding-3-small", input="x").data
    assert len(fake_openai.requests) == 3
    fake_openai.reset()
    fake_openai.fail_next(429, times=3)
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert error.value.code == "rate_limit_exceeded"
    assert error.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.value.request_id is not None and error.value.request_id.startswith("req_")
    assert len(fake_openai.requests) == 3


def test_bad_request_is_not_retried(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(400)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert error.value.status_code == 400
    assert error.value.code == "context_length_exceeded" and error.value.param == "messages"
    assert error.value.type == "invalid_request_error"
    assert len(fake_openai.requests) == 1
    fake_openai.fail_next(
        404,
        body={"error": {"message": "gone", "type": "invalid_request_error", "param": None, "code": "model_not_found"}},
    )
    with pytest.raises(openai.NotFoundError, match="gone"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


async def test_async_retry_and_status_error(aclient: openai.AsyncOpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(503)
    assert (await aclient.responses.create(model="gpt-4o", input="hi")).status == "completed"
    assert len(fake_openai.requests) == 2
    fake_openai.fail_next(401, headers={})
    with pytest.raises(openai.AuthenticationError):
        await aclient.responses.create(model="gpt-4o", input="hi")


def test_dropped_connection_is_retried(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.drop_connection_next()
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
    assert len(fake_openai.requests) == 2
    fake_openai.drop_connection_next()
    with pytest.raises(openai.APIConnectionError):
        client.with_options(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_broken_stream_raises_while_iterating(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.break_stream_after(3)
    received = []
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert len(fake_openai.requests) == 1  # a stream that broke after its headers is not retried
    # Only the next streamed answer breaks.
    assert len(list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))) == 11


async def test_async_broken_stream(aclient: openai.AsyncOpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.break_stream_after(4)
    received = []
    with pytest.raises(openai.APIConnectionError):
        async with aclient.responses.stream(model="gpt-4o", input="hi") as stream:
            async for event in stream:
                received.append(event.type)
    assert received == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
