"""Tests for llmtel.instrumentation.content: openai messages to GenAI semconv JSON.

Inputs mirror the request and response bodies in the recorded openllmetry cassettes
(test_vision, test_chat, test_responses); they are written out here, not read from disk.
"""

from __future__ import annotations

import base64
import json

import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from llmtel.instrumentation import content
from llmtel.instrumentation.content import (
    BASE64_MARKER,
    TRUNCATION_MARKER,
    base64_size,
    chat_input,
    chat_output,
    responses_input,
    responses_output,
    tool_definitions,
    truncate,
)

# The base64 body test_vision_base64 sends (a short text the image host answered with).
VISION_BASE64 = (
    "UGxlYXNlIHNldCBhIHVzZXItYWdlbnQgYW5kIHJlc3BlY3Qgb3VyIHJvYm90IHBvbGljeSBodHRwczovL3cud2lraS80d0pTLiBT"
    "ZWUgYWxzbyBodHRwczovL3BoYWJyaWNhdG9yLndpa2ltZWRpYS5vcmcvVDQwMDExOS4K"
)
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
    },
    "required": ["location"],
}


def loads(text: str | None) -> object:
    assert text is not None
    return json.loads(text)


def chat_completion(choices: list[dict]) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-DPTMq9dWVwbGykdacWnIkDij8YjIE",
            "object": "chat.completion",
            "created": 1774963460,
            "model": "gpt-3.5-turbo-0125",
            "choices": choices,
        }
    )


def response(output: list[dict], status: str = "completed", incomplete_reason: str | None = None) -> Response:
    return Response.model_validate(
        {
            "id": "resp_0f241063cf6416c80069cbcbe19f8c8199b8295e95a345f359",
            "object": "response",
            "created_at": 1774963681,
            "status": status,
            "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
            "model": "gpt-4.1-nano-2025-04-14",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
    )


# chat_input


def test_chat_input_exact_json() -> None:
    system, messages = chat_input(
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Tell me a joke about opentelemetry"},
        ],
        0,
    )
    assert system == '[{"type":"text","content":"You are a helpful assistant."}]'
    assert messages == '[{"role":"user","parts":[{"type":"text","content":"Tell me a joke about opentelemetry"}]}]'


def test_chat_input_developer_messages_are_system_instructions() -> None:
    system, messages = chat_input(
        [
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Bonjour", "name": "alice"},
            {"role": "system", "content": "Be brief."},
        ],
        0,
    )
    assert loads(system) == [
        {"type": "text", "content": "Answer in French."},
        {"type": "text", "content": "Be brief."},
    ]
    assert loads(messages) == [{"role": "user", "parts": [{"type": "text", "content": "Bonjour"}], "name": "alice"}]


def test_chat_input_only_system_has_no_input_messages() -> None:
    assert chat_input([{"role": "system", "content": "x"}], 0) == ('[{"type":"text","content":"x"}]', None)
    assert chat_input([], 0) == (None, None)


def test_chat_input_vision_base64_is_replaced_by_its_size() -> None:
    url = f"data:image/jpeg;base64,{VISION_BASE64}"
    _, messages = chat_input(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        0,
    )
    assert messages == (
        '[{"role":"user","parts":[{"type":"text","content":"What is in this image?"},'
        '{"type":"blob","modality":"image","mime_type":"image/jpeg","content":"<image/jpeg base64, 126 bytes>"}]}]'
    )
    assert len(base64.b64decode(VISION_BASE64)) == 126
    assert VISION_BASE64[:40] not in messages


@pytest.mark.parametrize("size", [48213, 48214, 48215, 0, 1, 2])
def test_base64_size_matches_decoded_length_for_every_padding(size: int) -> None:
    payload = base64.b64encode(bytes(range(256)) * (size // 256) + bytes(size % 256)).decode()
    assert base64_size(payload) == size
    assert base64_size(payload.encode()) == size
    _, messages = chat_input(
        [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{payload}"}}],
            }
        ],
        0,
    )
    assert loads(messages)[0]["parts"][0]["content"] == BASE64_MARKER.format(media="image/png", size=size)


def test_chat_input_http_image_url_is_kept() -> None:
    _, messages = chat_input(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://source.unsplash.com/8xznAGy4HcY/800x400"}},
                ],
            }
        ],
        0,
    )
    assert loads(messages)[0]["parts"][1] == {
        "type": "uri",
        "modality": "image",
        "mime_type": None,
        "uri": "https://source.unsplash.com/8xznAGy4HcY/800x400",
    }


def test_chat_input_audio_and_files_never_carry_base64() -> None:
    wav = base64.b64encode(b"RIFF" + bytes(996)).decode()
    pdf = base64.b64encode(b"%PDF-1.7" + bytes(92)).decode()
    _, messages = chat_input(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
                    {"type": "input_audio", "input_audio": {"data": wav, "format": "mp3"}},
                    {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "a.pdf"}},
                    {"type": "file", "file": {"file_data": pdf, "filename": "report.pdf"}},
                    {"type": "file", "file": {"file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"}},
                    {"type": "image_url", "image_url": {"url": pdf}},
                ],
            }
        ],
        0,
    )
    assert wav[:20] not in messages and pdf[:20] not in messages
    assert loads(messages)[0]["parts"] == [
        {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": "<audio/wav base64, 1000 bytes>"},
        {"type": "blob", "modality": "audio", "mime_type": "audio/mpeg", "content": "<audio/mpeg base64, 1000 bytes>"},
        {
            "type": "blob",
            "modality": "document",
            "mime_type": "application/pdf",
            "content": "<application/pdf base64, 100 bytes>",
        },
        {
            "type": "blob",
            "modality": "document",
            "mime_type": "application/pdf",
            "content": "<application/pdf base64, 100 bytes>",
        },
        {"type": "file", "modality": "document", "mime_type": None, "file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"},
        # A URL without a scheme is raw base64 (accepted by some compatible servers).
        {"type": "blob", "modality": "image", "mime_type": None, "content": "<image base64, 100 bytes>"},
    ]


def test_chat_input_tool_calls_and_tool_results() -> None:
    _, messages = chat_input(
        [
            {"role": "user", "content": "What's the weather like in San Francisco?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": '{"location": "San Francisco"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "1", "content": "The weather in San Francisco is 70 degrees and sunny."},
        ],
        0,
    )
    assert messages == (
        '[{"role":"user","parts":[{"type":"text","content":"What\'s the weather like in San Francisco?"}]},'
        '{"role":"assistant","parts":[{"type":"tool_call","id":"1","name":"get_current_weather",'
        '"arguments":{"location":"San Francisco"}}]},'
        '{"role":"tool","parts":[{"type":"tool_call_response","id":"1",'
        '"response":"The weather in San Francisco is 70 degrees and sunny."}]}]'
    )


def test_chat_input_json_tool_result_and_legacy_function_messages() -> None:
    _, messages = chat_input(
        [
            {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": "not json"}},
            {"role": "function", "name": "lookup", "content": '{"temperature": 70}'},
            {"role": "tool", "tool_call_id": "2", "content": [{"type": "text", "text": "sunny"}]},
            {"role": "tool", "tool_call_id": "3", "content": "42"},
        ],
        0,
    )
    assert loads(messages) == [
        {"role": "assistant", "parts": [{"type": "tool_call", "id": None, "name": "lookup", "arguments": "not json"}]},
        {
            "role": "function",
            "parts": [{"type": "tool_call_response", "id": None, "response": {"temperature": 70}}],
            "name": "lookup",
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "2", "response": [{"type": "text", "content": "sunny"}]}],
        },
        # Only objects and arrays are parsed: "42" stays the string the tool returned.
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "3", "response": "42"}]},
    ]


def test_chat_input_accepts_pydantic_messages_from_an_earlier_completion() -> None:
    earlier = chat_completion(
        [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Why did the span cross the road?", "refusal": None},
                "finish_reason": "stop",
            }
        ]
    )
    _, messages = chat_input(
        [
            {"role": "user", "content": "Tell me a joke"},
            earlier.choices[0].message,
            {"role": "user", "content": "Another"},
        ],
        0,
    )
    assert loads(messages)[1] == {
        "role": "assistant",
        "parts": [{"type": "text", "content": "Why did the span cross the road?"}],
    }


def test_truncation_marker_on_every_text() -> None:
    long_text = "a" * 150
    system, messages = chat_input(
        [
            {"role": "system", "content": long_text},
            {"role": "user", "content": [{"type": "text", "text": long_text}]},
            {"role": "tool", "tool_call_id": "1", "content": long_text},
        ],
        100,
    )
    cut = "a" * 100 + "…[truncated 50 chars]"
    assert loads(system) == [{"type": "text", "content": cut}]
    assert loads(messages) == [
        {"role": "user", "parts": [{"type": "text", "content": cut}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "1", "response": cut}]},
    ]
    assert TRUNCATION_MARKER.format(removed=50) == "…[truncated 50 chars]"


def test_truncation_limits() -> None:
    assert truncate("abcdef", 0) == "abcdef"
    assert truncate("abcdef", 6) == "abcdef"
    assert truncate("abcdef", 5) == "abcde…[truncated 1 chars]"
    assert truncate("é" * 3, 1) == "é…[truncated 2 chars]"


def test_tool_call_arguments_longer_than_the_limit_are_cut_not_parsed() -> None:
    arguments = json.dumps({"query": "x" * 50})
    _, messages = chat_input(
        [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "search", "arguments": arguments}}],
            }
        ],
        20,
    )
    part = loads(messages)[0]["parts"][0]
    assert part["arguments"] == arguments[:20] + f"…[truncated {len(arguments) - 20} chars]"


def test_generators_are_never_consumed() -> None:
    def messages():
        yield {"role": "user", "content": "one"}
        yield {"role": "user", "content": "two"}

    generator = messages()
    assert chat_input(generator, 0) == (None, None)
    assert [m["content"] for m in generator] == ["one", "two"]

    parts = (part for part in [{"type": "text", "text": "hidden"}])
    tool_calls = iter([{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
    _, converted = chat_input(
        [{"role": "user", "content": parts}, {"role": "assistant", "content": "ok", "tool_calls": tool_calls}],
        0,
    )
    assert loads(converted) == [{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]
    assert next(parts) == {"type": "text", "text": "hidden"}
    assert next(tool_calls)["id"] == "1"

    items = iter([{"role": "user", "content": "hi"}])
    assert responses_input(items, None, 0) == (None, None)
    assert next(items) == {"role": "user", "content": "hi"}

    tools = iter([{"type": "function", "function": {"name": "f"}}])
    assert tool_definitions(tools) is None
    assert next(tools)["type"] == "function"

    choices = iter([{"index": 0, "content": "x"}])
    assert chat_output(choices, 0) is None
    assert next(choices)["content"] == "x"


class Exploding:
    @property
    def role(self) -> str:
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "messages",
    [
        None,
        "hello",
        42,
        [None, 42, "text", {}],
        [{"role": "user", "content": None}],
        [{"role": "user", "content": 12}],
        [{"role": None, "content": "x"}],
        [{"role": "user", "content": [None, 3, {"type": None}, {"type": "text", "text": None}, {"text": "no type"}]}],
        [{"role": "user", "content": [{"type": "image_url"}, {"type": "image_url", "image_url": {"url": None}}]}],
        [{"role": "user", "content": [{"type": "input_audio", "input_audio": None}, {"type": "file"}]}],
        [{"role": "assistant", "tool_calls": [None, {}, {"function": None}]}],
        [{"role": "tool"}],
        [Exploding()],
    ],
)
def test_chat_input_never_raises(messages: object) -> None:
    system, converted = chat_input(messages, 10)
    for value in (system, converted):
        assert value is None or isinstance(json.loads(value), list)


def test_unknown_parts_keep_their_type() -> None:
    _, messages = chat_input(
        [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}, "secret": "s"},
                    {"text": "no type"},
                    {"type": 7},
                ],
            }
        ],
        0,
    )
    assert loads(messages)[0]["parts"] == [
        {"type": "video_url"},
        {"type": "text", "content": "no type"},
        {"type": "unknown"},
    ]


# chat_output


def test_chat_output_from_a_chat_completion_with_tool_calls() -> None:
    completion = chat_completion(
        [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_NnblzAO7oa78mQTzjUYLcouN",
                            "type": "function",
                            "function": {"name": "get_current_weather", "arguments": '{"location":"San Francisco"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ]
    )
    assert chat_output(completion.choices, 0) == (
        '[{"role":"assistant","parts":[{"type":"tool_call","id":"call_NnblzAO7oa78mQTzjUYLcouN",'
        '"name":"get_current_weather","arguments":{"location":"San Francisco"}}],"finish_reason":"tool_call"}]'
    )


def test_chat_output_from_a_chat_completion_with_several_choices() -> None:
    completion = chat_completion(
        [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The current weather is sunny.", "refusal": None},
                "finish_reason": "stop",
            },
            {"index": 1, "message": {"role": "assistant", "content": "It is"}, "finish_reason": "length"},
            {
                "index": 2,
                "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                "finish_reason": "content_filter",
            },
        ]
    )
    assert loads(chat_output(completion.choices, 0)) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "The current weather is sunny."}],
            "finish_reason": "stop",
        },
        {"role": "assistant", "parts": [{"type": "text", "content": "It is"}], "finish_reason": "length"},
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "I can't help with that."}],
            "finish_reason": "content_filter",
        },
    ]


def test_chat_output_audio_custom_tools_and_reasoning_content() -> None:
    audio = base64.b64encode(bytes(3000)).decode()
    completion = chat_completion(
        [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "The user wants a greeting.",
                    "audio": {"id": "audio_1", "data": audio, "expires_at": 1, "transcript": "Hello there!"},
                    "tool_calls": [{"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}],
                },
                "finish_reason": "stop",
            }
        ]
    )
    output = chat_output(completion.choices, 0)
    assert audio[:20] not in output
    assert loads(output)[0]["parts"] == [
        {"type": "reasoning", "content": "The user wants a greeting."},
        {
            "type": "blob",
            "modality": "audio",
            "mime_type": None,
            "content": "<audio base64, 3000 bytes>",
            "transcript": "Hello there!",
        },
        {"type": "tool_call", "id": "call_2", "name": "sql", "arguments": "SELECT 1"},
    ]


def test_chat_output_from_stream_accumulated_dicts() -> None:
    output = chat_output(
        [
            {
                "index": 0,
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [{"id": "call_1", "name": "get_current_weather", "arguments": '{"location":"Boston"}'}],
                "finish_reason": "tool_calls",
            },
            # A stream the caller stopped reading: no finish reason yet.
            {"index": 1, "role": "assistant", "content": "Partial", "tool_calls": [], "finish_reason": None},
        ],
        0,
    )
    assert output == (
        '[{"role":"assistant","parts":[{"type":"text","content":"Let me check."},'
        '{"type":"tool_call","id":"call_1","name":"get_current_weather","arguments":{"location":"Boston"}}],'
        '"finish_reason":"tool_call"},'
        '{"role":"assistant","parts":[{"type":"text","content":"Partial"}],"finish_reason":null}]'
    )


def test_chat_output_truncates_and_tolerates_odd_input() -> None:
    assert loads(chat_output([{"content": "x" * 12, "finish_reason": "stop"}], 10)) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "x" * 10 + "…[truncated 2 chars]"}],
            "finish_reason": "stop",
        }
    ]
    assert chat_output(None, 0) is None
    assert chat_output([], 0) is None
    assert loads(chat_output([None, {}], 0)) == [
        {"role": "assistant", "parts": [], "finish_reason": None},
        {"role": "assistant", "parts": [], "finish_reason": None},
    ]


# responses_input


def test_responses_input_string_and_instructions() -> None:
    system, messages = responses_input("Count r's in strawberry", "You are a precise counter.", 0)
    assert system == '[{"type":"text","content":"You are a precise counter."}]'
    assert messages == '[{"role":"user","parts":[{"type":"text","content":"Count r\'s in strawberry"}]}]'
    assert responses_input(None, None, 0) == (None, None)


def test_responses_input_history() -> None:
    system, messages = responses_input(
        [
            {"role": "user", "content": "Come up with an adjective in English. Respond with just one word."},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Luminous"}]},
            {"role": "user", "content": "Can you explain why you chose that word?"},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Keep it short."}]},
        ],
        None,
        0,
    )
    assert system == '[{"type":"text","content":"Keep it short."}]'
    assert messages == (
        '[{"role":"user","parts":[{"type":"text","content":'
        '"Come up with an adjective in English. Respond with just one word."}]},'
        '{"role":"assistant","parts":[{"type":"text","content":"Luminous"}]},'
        '{"role":"user","parts":[{"type":"text","content":"Can you explain why you chose that word?"}]}]'
    )


def test_responses_input_tool_round_trip_merges_one_turn() -> None:
    earlier = response(
        [
            {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Need the weather."}]},
            {
                "id": "fc_1",
                "type": "function_call",
                "status": "completed",
                "arguments": '{"location":"London"}',
                "call_id": "call_grggfsR0ccRoMcXy17gsju6I",
                "name": "get_weather",
            },
            {
                "id": "fc_2",
                "type": "function_call",
                "status": "completed",
                "arguments": '{"location":"Paris"}',
                "call_id": "call_jQ4vl5MZL0h55SoqPmlfYYyd",
                "name": "get_weather",
            },
        ]
    )
    _, messages = responses_input(
        [
            {"type": "message", "role": "user", "content": "What's the weather in London and Paris?"},
            *earlier.output,
            {"type": "function_call_output", "call_id": "call_grggfsR0ccRoMcXy17gsju6I", "output": '{"temp_c":14}'},
            {"type": "function_call_output", "call_id": "call_jQ4vl5MZL0h55SoqPmlfYYyd", "output": "Rain"},
        ],
        None,
        0,
    )
    assert loads(messages) == [
        {"role": "user", "parts": [{"type": "text", "content": "What's the weather in London and Paris?"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "Need the weather."},
                {
                    "type": "tool_call",
                    "id": "call_grggfsR0ccRoMcXy17gsju6I",
                    "name": "get_weather",
                    "arguments": {"location": "London"},
                },
                {
                    "type": "tool_call",
                    "id": "call_jQ4vl5MZL0h55SoqPmlfYYyd",
                    "name": "get_weather",
                    "arguments": {"location": "Paris"},
                },
            ],
        },
        {
            "role": "tool",
            "parts": [
                {"type": "tool_call_response", "id": "call_grggfsR0ccRoMcXy17gsju6I", "response": {"temp_c": 14}},
                {"type": "tool_call_response", "id": "call_jQ4vl5MZL0h55SoqPmlfYYyd", "response": "Rain"},
            ],
        },
    ]


def test_responses_input_images_files_and_audio() -> None:
    png = base64.b64encode(bytes(48213)).decode()
    mp3 = base64.b64encode(bytes(10)).decode()
    _, messages = responses_input(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Compare these."},
                    {"type": "input_image", "detail": "auto", "image_url": f"data:image/png;base64,{png}"},
                    {"type": "input_image", "detail": "low", "image_url": "https://example.com/cat.jpg"},
                    {"type": "input_image", "detail": "high", "file_id": "file-abc"},
                    {"type": "input_file", "file_data": f"data:application/pdf;base64,{png}", "filename": "a.pdf"},
                    {"type": "input_file", "file_url": "https://example.com/report.pdf"},
                    {"type": "input_file", "file_id": "file-def"},
                    {"type": "input_audio", "input_audio": {"data": mp3, "format": "mp3"}},
                ],
            }
        ],
        None,
        0,
    )
    assert png[:20] not in messages
    assert loads(messages)[0]["parts"] == [
        {"type": "text", "content": "Compare these."},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "<image/png base64, 48213 bytes>"},
        {"type": "uri", "modality": "image", "mime_type": None, "uri": "https://example.com/cat.jpg"},
        {"type": "file", "modality": "image", "mime_type": None, "file_id": "file-abc"},
        {
            "type": "blob",
            "modality": "document",
            "mime_type": "application/pdf",
            "content": "<application/pdf base64, 48213 bytes>",
        },
        {"type": "uri", "modality": "document", "mime_type": None, "uri": "https://example.com/report.pdf"},
        {"type": "file", "modality": "document", "mime_type": None, "file_id": "file-def"},
        {"type": "blob", "modality": "audio", "mime_type": "audio/mpeg", "content": "<audio/mpeg base64, 10 bytes>"},
    ]


def test_responses_input_function_output_as_content_list_and_unknown_items() -> None:
    screenshot = base64.b64encode(bytes(999)).decode()
    _, messages = responses_input(
        [
            {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": [
                    {"type": "input_text", "text": "Here is the chart"},
                    {"type": "input_image", "image_url": f"data:image/webp;base64,{screenshot}"},
                ],
            },
            {
                "type": "computer_call_output",
                "call_id": "call_2",
                "output": {"type": "computer_screenshot", "image_url": f"data:image/png;base64,{screenshot}"},
            },
            {"type": "item_reference", "id": "msg_123"},
            {
                "type": "local_shell_call",
                "id": "lsc_1",
                "call_id": "call_3",
                "status": "completed",
                "action": {"type": "exec", "command": ["ls"], "env": {"AWS_SECRET_ACCESS_KEY": "hunter2"}},
            },
        ],
        None,
        0,
    )
    assert "hunter2" not in messages and screenshot[:20] not in messages
    assert loads(messages) == [
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "call_1",
                    "response": [
                        {"type": "text", "content": "Here is the chart"},
                        {
                            "type": "blob",
                            "modality": "image",
                            "mime_type": "image/webp",
                            "content": "<image/webp base64, 999 bytes>",
                        },
                    ],
                },
                {
                    "type": "tool_call_response",
                    "id": "call_2",
                    "response": {
                        "type": "blob",
                        "modality": "image",
                        "mime_type": "image/png",
                        "content": "<image/png base64, 999 bytes>",
                    },
                },
            ],
        },
        {
            "role": "assistant",
            "parts": [
                {"type": "item_reference", "id": "msg_123"},
                {
                    "type": "server_tool_call",
                    "id": "lsc_1",
                    "name": "local_shell_call",
                    "server_tool_call": {"type": "local_shell_call"},
                },
            ],
        },
    ]


@pytest.mark.parametrize(
    ("input_value", "instructions"),
    [(42, 42), ([None, 1, {}], None), ([{"type": "function_call"}], [None]), ([{"type": None, "role": 3}], "")],
)
def test_responses_input_never_raises(input_value: object, instructions: object) -> None:
    for value in responses_input(input_value, instructions, 5):
        assert value is None or isinstance(json.loads(value), list)


# responses_output


def test_responses_output_function_calls() -> None:
    result = response(
        [
            {
                "id": "fc_0f241063cf6416c80069cbcbe2b80c8199badf459b4b519011",
                "type": "function_call",
                "status": "completed",
                "arguments": '{"location":"London"}',
                "call_id": "call_grggfsR0ccRoMcXy17gsju6I",
                "name": "get_weather",
            },
            {
                "id": "fc_0f241063cf6416c80069cbcbe2b8188199b9f8e8b2bcebef5b",
                "type": "function_call",
                "status": "completed",
                "arguments": '{"location":"London"}',
                "call_id": "call_jQ4vl5MZL0h55SoqPmlfYYyd",
                "name": "get_weather",
            },
        ]
    )
    assert responses_output(result.output, 0) == (
        '[{"role":"assistant","parts":['
        '{"type":"tool_call","id":"call_grggfsR0ccRoMcXy17gsju6I","name":"get_weather","arguments":{"location":"London"}},'
        '{"type":"tool_call","id":"call_jQ4vl5MZL0h55SoqPmlfYYyd","name":"get_weather","arguments":{"location":"London"}}'
        '],"finish_reason":"tool_call"}]'
    )


def test_responses_output_reasoning_and_message() -> None:
    result = response(
        [
            {"id": "rs_01f7ba91862c63a00069cbcbe37d34819082744104112ff8ef", "type": "reasoning", "summary": []},
            {
                "id": "rs_2",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "Count the letters."}],
                "encrypted_content": "gAAAAABo-secret",
            },
            {
                "id": "msg_01f7ba91862c63a00069cbcbe4bf0c8190b58a67c072b3ea3a",
                "type": "message",
                "status": "completed",
                "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "3"}],
                "role": "assistant",
            },
        ]
    )
    expected = (
        '[{"role":"assistant","parts":[{"type":"reasoning","content":"Count the letters."},'
        '{"type":"text","content":"3"}],"finish_reason":"stop"}]'
    )
    assert responses_output(result.output, 0) == expected
    assert responses_output(result, 0) == expected


def test_responses_output_incomplete_refusal_and_generated_image() -> None:
    image = base64.b64encode(bytes(2048)).decode()
    result = response(
        [
            {
                "id": "ig_1",
                "type": "image_generation_call",
                "status": "completed",
                "result": image,
                "output_format": "webp",
            },
            {
                "id": "msg_1",
                "type": "message",
                "status": "incomplete",
                "role": "assistant",
                "content": [
                    {"type": "refusal", "refusal": "I can't draw that."},
                    {"type": "output_text", "annotations": [], "text": "abcdefghijkl"},
                ],
            },
        ],
        status="incomplete",
        incomplete_reason="max_output_tokens",
    )
    output = responses_output(result, 6)
    assert image[:20] not in output
    assert loads(output) == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "server_tool_call",
                    "id": "ig_1",
                    "name": "image_generation_call",
                    "server_tool_call": {"type": "image_generation_call"},
                },
                {
                    "type": "blob",
                    "modality": "image",
                    "mime_type": "image/webp",
                    "content": "<image/webp base64, 2048 bytes>",
                },
                {"type": "text", "content": "I can'…[truncated 12 chars]"},
                {"type": "text", "content": "abcdef…[truncated 6 chars]"},
            ],
            "finish_reason": "length",
        }
    ]


def test_responses_output_nothing_to_record() -> None:
    assert responses_output([], 0) is None
    assert responses_output(None, 0) is None
    assert responses_output([{"type": "reasoning", "summary": []}], 0) is None
    assert loads(responses_output([None, {"type": "mystery"}], 0)) == [
        {"role": "assistant", "parts": [{"type": "unknown"}, {"type": "mystery"}], "finish_reason": None}
    ]


# tool_definitions


def test_tool_definitions_chat_tools() -> None:
    assert tool_definitions(
        [
            {
                "type": "function",
                "function": {
                    "name": "get_current_weather",
                    "description": "Get the current weather",
                    "parameters": WEATHER_PARAMETERS,
                },
            },
            {"type": "function", "function": {"name": "ping"}},
            {"type": "custom", "custom": {"name": "sql", "description": "Run SQL", "format": {"type": "text"}}},
        ]
    ) == (
        '[{"type":"function","name":"get_current_weather","description":"Get the current weather",'
        '"parameters":{"type":"object","properties":{"location":{"type":"string",'
        '"description":"The city and state, e.g. San Francisco, CA"}},"required":["location"]}},'
        '{"type":"function","name":"ping"},'
        '{"type":"custom","name":"sql","description":"Run SQL"}]'
    )


def test_tool_definitions_responses_tools_never_copy_headers() -> None:
    definitions = tool_definitions(
        [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Get the current weather for a location",
                "parameters": WEATHER_PARAMETERS,
                "strict": True,
            },
            {"type": "web_search"},
            {"type": "file_search", "vector_store_ids": ["vs_1"]},
            {
                "type": "mcp",
                "server_label": "github",
                "server_url": "https://api.githubcopilot.com/mcp/",
                "headers": {"Authorization": "Bearer ghp_secret"},
                "authorization": "sk-secret",
            },
        ]
    )
    assert "secret" not in definitions
    assert loads(definitions) == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Get the current weather for a location",
            "parameters": WEATHER_PARAMETERS,
        },
        {"type": "web_search", "name": "web_search"},
        {"type": "file_search", "name": "file_search"},
        {"type": "mcp", "name": "github"},
    ]


def test_tool_definitions_odd_input() -> None:
    assert tool_definitions(None) is None
    assert tool_definitions([]) is None
    assert tool_definitions([None, {"name": "no type"}]) is None

    class Schema:
        def model_dump(self, mode: str) -> dict:
            return {"type": "object"}

    cyclic: dict = {}
    cyclic["self"] = cyclic
    assert loads(tool_definitions([{"type": "function", "function": {"name": "f", "parameters": Schema()}}])) == [
        {"type": "function", "name": "f", "parameters": {"type": "object"}}
    ]
    assert tool_definitions([{"type": "function", "function": {"name": "f", "parameters": cyclic}}]) is None


def test_json_is_compact_and_keeps_unicode() -> None:
    _, messages = chat_input([{"role": "user", "content": "Grüße, 世界"}], 0)
    assert messages == '[{"role":"user","parts":[{"type":"text","content":"Grüße, 世界"}]}]'


def test_markers_are_module_constants() -> None:
    assert content.TRUNCATION_MARKER == "…[truncated {removed} chars]"
    assert content.BASE64_MARKER.format(media="image/png", size=48213) == "<image/png base64, 48213 bytes>"
