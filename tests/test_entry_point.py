"""`opentelemetry-instrument` finds the instrumentor by its entry point, in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

APP = """
import openai
client = openai.OpenAI()
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
for _ in client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                        stream=True):
    pass
"""


def _spans_from_console(output: str) -> list[dict]:
    """The ConsoleSpanExporter prints one JSON object per span, back to back."""
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while True:
        start = output.find("{", index)
        if start < 0:
            return spans
        span, index = decoder.raw_decode(output, start)
        spans.append(span)


def _run_instrumented(tmp_path: Path, fake_openai, **extra_env: str) -> list[dict]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {
        **os.environ,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "entry-point-test",
        **extra_env,
    }
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run(
        [str(instrument), sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return _spans_from_console(result.stdout)


def test_entry_point_is_ours_and_loadable():
    (entry,) = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "llmtel_openai"]
    assert entry.value == "llmtel.instrumentation.openai_instrumentor:OpenAIInstrumentor"
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    # The loader gates on the distribution's `instruments` extra: openai is installed here.
    assert get_dist_dependency_conflicts(entry.dist) is None
    assert any("openai" in req and 'extra == "instruments"' in req for req in entry.dist.requires)


def test_opentelemetry_instrument_makes_llm_spans(tmp_path, fake_openai):
    spans = _run_instrumented(tmp_path, fake_openai)
    llm = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert len(llm) == 2, [s["name"] for s in spans]
    for span in llm:
        assert span["name"] == "chat gpt-4o-mini"
        assert span["kind"] == "SpanKind.CLIENT"
        assert span["attributes"]["gen_ai.usage.output_tokens"] > 0
        assert span["resource"]["attributes"]["service.name"] == "entry-point-test"
    assert llm[1]["attributes"]["gen_ai.request.stream"] is True


@pytest.mark.parametrize("disabled", ["llmtel_openai", "llmtel_openai,requests"])
def test_disabled_instrumentations_env_skips_us(tmp_path, fake_openai, disabled):
    spans = _run_instrumented(tmp_path, fake_openai, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=disabled)
    assert not [s for s in spans if "gen_ai.operation.name" in s["attributes"]]
