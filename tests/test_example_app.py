"""The example support bot under `opentelemetry-instrument`: exactly the expected span tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_entry_point import _spans_from_console

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support_bot.py"
CONTEXT = {"user.id": "customer-42", "session.id": "session-7", "llmtel.tags": ["example"]}


def _run(fake_openai, **extra_env: str) -> tuple[list[dict], str]:
    env = {
        **os.environ,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "support-bot",
        **extra_env,
    }
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run([str(instrument), sys.executable, str(EXAMPLE)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    return _spans_from_console(text[text.index("{"):]), text


def _tree(spans: list[dict]) -> list:
    """(name, kind, children) nested from the parents, children in start order."""
    by_parent: dict[str | None, list[dict]] = {}
    for span in spans:
        by_parent.setdefault(span["parent_id"], []).append(span)

    def build(parent_id: str | None) -> list:
        children = sorted(by_parent.get(parent_id, []), key=lambda s: s["start_time"])
        return [(s["name"], s["kind"], build(s["context"]["span_id"])) for s in children]

    return build(None)


def test_support_bot_tree(fake_openai):
    fake_openai.tool_calls = [("lookup_order", '{"order_id": "A1001"}')]
    spans, output = _run(fake_openai)
    assert "handled: NotFoundError" in output
    client, internal = "SpanKind.CLIENT", "SpanKind.INTERNAL"
    chat = ("chat gpt-4o-mini", client, [])
    embeddings = ("embeddings text-embedding-3-small", client, [])
    assert _tree(spans) == [
        ("invoke_workflow support-request", internal, [
            ("transcription whisper-1", client, []),
            ("invoke_agent triage", internal, [chat, ("execute_tool lookup_order", internal, []), chat]),
            ("execute_tool search_knowledge", internal, [embeddings] * 4),
            ("invoke_agent writer", internal, [chat]),
            ("chat no-such-model", client, []),
        ])
    ]
    by_name: dict[str, list[dict]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
        # Every span of the request carries the context() attributes, and the service name.
        assert {k: span["attributes"].get(k) for k in CONTEXT} == CONTEXT, span["name"]
        assert span["resource"]["attributes"]["service.name"] == "support-bot"

    requests = fake_openai.requests
    llm = [s for s in spans if s["kind"] == client]
    assert len(llm) == len(requests) == 9  # one span per HTTP request, no duplicates

    (root,) = by_name["invoke_workflow support-request"]
    assert root["attributes"]["gen_ai.operation.name"] == "invoke_workflow"
    assert root["attributes"]["llmtel.workflow.llm_calls"] == 9  # the failed call counts too
    ok_llm = [s for s in llm if s["status"]["status_code"] != "ERROR"]
    assert root["attributes"]["llmtel.workflow.input_tokens"] == sum(
        s["attributes"].get("gen_ai.usage.input_tokens", 0) for s in ok_llm)
    assert root["attributes"]["llmtel.workflow.cost"] == pytest.approx(sum(
        s["attributes"].get("gen_ai.usage.cost", 0) for s in ok_llm))
    assert root["attributes"]["llmtel.workflow.tool_calls"] == 2

    (triage,) = by_name["invoke_agent triage"]
    assert triage["attributes"]["gen_ai.agent.name"] == "triage"
    assert triage["attributes"]["gen_ai.agent.description"] == "Finds the facts a support answer needs"
    assert triage["attributes"]["llmtel.agent.llm_calls"] == 2
    assert triage["attributes"]["llmtel.agent.tool_calls"] == 1

    (lookup,) = by_name["execute_tool lookup_order"]
    first_chat = json.loads(requests[1].body) if requests[1].json is None else requests[1].json
    assert first_chat["tools"][0]["function"]["name"] == "lookup_order"
    second_chat = requests[2].json
    tool_message = [m for m in second_chat["messages"] if m["role"] == "tool"][0]
    assert lookup["attributes"]["gen_ai.tool.call.id"] == tool_message["tool_call_id"]
    assert lookup["attributes"]["gen_ai.tool.name"] == "lookup_order"
    assert lookup["attributes"]["gen_ai.tool.type"] == "function"

    (writer_chat,) = [s for s in by_name["chat gpt-4o-mini"]
                      if s["attributes"].get("gen_ai.request.stream")]
    assert writer_chat["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert writer_chat["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]

    (failed,) = by_name["chat no-such-model"]
    assert failed["status"]["status_code"] == "ERROR"
    assert failed["attributes"]["error.type"] == "NotFoundError"
    assert failed["attributes"]["http.response.status_code"] == 404

    for span in by_name["embeddings text-embedding-3-small"]:
        assert span["attributes"]["gen_ai.usage.input_tokens"] > 0
    (transcription,) = by_name["transcription whisper-1"]
    assert transcription["attributes"]["gen_ai.operation.name"] == "transcription"


def test_support_bot_skips_what_the_endpoint_lacks(fake_openai):
    spans, output = _run(fake_openai, SUPPORT_BOT_TRANSCRIPTION_MODEL="no-such-model",
                         SUPPORT_BOT_EMBEDDING_MODEL="no-such-model")
    assert "note: transcription skipped" in output
    assert "note: knowledge search skipped" in output
    names = [s["name"] for s in spans]
    assert "invoke_agent writer" in names and "invoke_agent triage" in names
