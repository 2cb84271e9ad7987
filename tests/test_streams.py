"""The bytes of a stream we asked usage for reach the SDK without the `"usage":null` fields."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmtel.instrumentation.streams import _awithout_usage_nulls, _UsageNullDropper, _without_usage_nulls

MESSAGES = [{"role": "user", "content": "Where is my order?"}]


def _event(body: dict) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


CONTENT = {"id": "c1", "object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": {"content": 'say "usage":null'}}], "usage": None}
FINAL = {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 3}}
STREAM = _event(CONTENT) + _event(CONTENT) + _event(FINAL) + b"data: [DONE]\n\n"
EXPECTED = 2 * _event({k: v for k, v in CONTENT.items() if k != "usage"}) + _event(FINAL) + b"data: [DONE]\n\n"
# Re-serialised by a proxy with json.dumps' default separators.
SPACED = b'data: {"id": "c1", "choices": [], "usage": null}\n\n' * 2 + b"data: [DONE]\n\n"
SPACED_EXPECTED = b'data: {"id": "c1", "choices": []}\n\n' * 2 + b"data: [DONE]\n\n"


@pytest.mark.parametrize("size", [1, 2, 5, 13, 64, len(STREAM)])
def test_usage_nulls_dropped_whatever_the_reads_cut(size: int) -> None:
    reads = [STREAM[i:i + size] for i in range(0, len(STREAM), size)]
    out = b"".join(_without_usage_nulls(iter(reads)))
    assert out == EXPECTED
    # Content that merely mentions the field (escaped inside a JSON string) is untouched.
    assert json.loads(out.split(b"\n\n")[0][6:])["choices"][0]["delta"]["content"] == 'say "usage":null'
    spaced_reads = [SPACED[i:i + size] for i in range(0, len(SPACED), size)]
    assert b"".join(_without_usage_nulls(iter(spaced_reads))) == SPACED_EXPECTED


def test_usage_nulls_dropped_from_async_reads() -> None:
    async def reads():
        for i in range(0, len(STREAM), 7):
            yield STREAM[i:i + 7]

    async def collect() -> bytes:
        return b"".join([data async for data in _awithout_usage_nulls(reads())])

    assert asyncio.run(collect()) == EXPECTED


def test_the_stream_decodes_through_the_dropper_only_when_we_asked_for_usage(client, telemetry, fake_openai):
    ours = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert isinstance(ours.__wrapped__._decoder, _UsageNullDropper)
    chunks = list(ours)
    theirs = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    assert not isinstance(theirs.__wrapped__._decoder, _UsageNullDropper)
    their_chunks = list(theirs)
    assert their_chunks[-1].usage is not None and chunks[-1].usage is None  # ours hidden, theirs kept
    assert all("usage" not in c.model_dump(exclude_unset=True) for c in chunks)
    span = telemetry.llm_spans()[0]
    assert span.attributes["gen_ai.usage.output_tokens"] == their_chunks[-1].usage.completion_tokens


def _chunk(**fields):
    from openai._models import construct_type
    from openai.types.chat import ChatCompletionChunk

    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", **fields}
    return construct_type(type_=ChatCompletionChunk, value=body)


def test_chunk_state_reads_usage_on_the_finishing_chunk_and_tool_calls_only_when_offered() -> None:
    from llmtel.instrumentation.stream_state import ChatStreamState

    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    tool_delta = {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}
    chunks = [
        _chunk(choices=[{"index": 0, "delta": tool_delta, "finish_reason": None}]),
        # Some OpenAI-compatible servers put usage on the last content chunk, not on a chunk of its own.
        _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], usage=usage),
    ]
    for offered in (True, False):
        state = ChatStreamState(hide_usage=False, keep_text=False, track_tools=offered)
        assert not any(state.on_chunk(c) for c in chunks)
        attrs: dict = {}
        state.attributes(attrs)
        assert attrs["gen_ai.usage.input_tokens"] == 5 and attrs["gen_ai.usage.output_tokens"] == 2
        assert attrs["gen_ai.response.finish_reasons"] == ["tool_calls"]
        assert state.tool_calls() == ([("call_1", "f")] if offered else [])
    hidden = ChatStreamState(hide_usage=True, keep_text=False)
    assert hidden.on_chunk(_chunk(choices=[], usage=usage)) is True


def test_instrumented_calls_leave_no_reference_cycles(client, telemetry):
    """An invocation's context holds the invocation: it is dropped when the call ends, so the
    invocation, its span and its stream state are freed by reference counting (no work left for
    the garbage collector, whose passes grow with every object a call leaves in a cycle)."""
    import gc

    def calls() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    calls()  # warm: imports and caches
    gc.collect()
    gc.disable()
    try:
        calls()
        calls()
        assert len(telemetry.llm_spans()) == 6
        cyclic = gc.collect()
    finally:
        gc.enable()
    assert cyclic == 0
