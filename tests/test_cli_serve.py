"""The llmtel command on an embedded store that ``llmtel serve`` owns: it reads through the server.

One ``llmtel serve --store P --port 0`` subprocess (with a token, ``--ack-after-store``) owns a
fresh store for the module; spans reach it over OTLP/HTTP. The commands are then given the
*store* (``--endpoint chdb:///P`` or the environment), not the server: they find it through its
discovery file and answer through its ClickHouse HTTP endpoint. This process never opens chDB
itself (the store is the server's), so nothing needs closing here; after the server stops, the
same command, run as a subprocess, opens the store directly and gives the same answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from llmtel.exporter_clickhouse.cli import main
from llmtel.exporter_clickhouse.serve import READY_PREFIX, SERVE_TOKEN_VARIABLE
from llmtel.exporter_clickhouse.serve_discovery import discovery_path

TOKEN = "cli-serve-token"
MODELS = {"gpt-4o-mini": 0.002, "gpt-4o": 0.01, "local-model": None}


@dataclass
class Served:
    store: Path
    process: subprocess.Popen[str]
    url: str
    output: deque[str]
    spans: list[ReadableSpan]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_serve(store: Path, data_dir: Path) -> Served:
    """``llmtel serve`` (through the CLI's own dispatch) on ``store``, once it listens."""
    environment = {**os.environ, "XDG_DATA_HOME": str(data_dir), "PYTHONUNBUFFERED": "1",
                   SERVE_TOKEN_VARIABLE: TOKEN}
    environment.pop("OTEL_EXPORTER_CLICKHOUSE_ENDPOINT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "llmtel.exporter_clickhouse.cli", "serve", "--store", str(store), "--port", "0",
         "--ack-after-store"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
    )
    output: deque[str] = deque(maxlen=200)
    listening: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            if line.startswith(READY_PREFIX):
                listening.append(line[len(READY_PREFIX):].split()[0])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(120)
    served = Served(store, process, listening[0] if listening else "", output, [])
    if not served.url or process.poll() is not None:
        served.stop()
        raise RuntimeError("llmtel serve did not start:\n" + "\n".join(output))
    return served


def llm_spans() -> list[ReadableSpan]:
    """Finished chat spans: two priced models and an unpriced one, one call failed."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "served-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("cli-serve-tests", "1.0")
    for number in range(12):
        model = list(MODELS)[number % len(MODELS)]
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
            "gen_ai.response.model": model, "gen_ai.usage.input_tokens": 10 + number,
            "gen_ai.usage.output_tokens": number,
        }
        if MODELS[model] is not None:
            attributes["gen_ai.usage.cost"] = MODELS[model]
        with tracer.start_as_current_span(f"chat {model}", attributes=attributes) as span:
            if number == 5:
                span.set_status(Status(StatusCode.ERROR, "rate limited"))
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("cli-serve")
    server = start_serve(root / "store", root / "data")
    try:
        server.spans = llm_spans()
        exporter = OTLPSpanExporter(endpoint=server.url + "/v1/traces", headers={"Authorization": f"Bearer {TOKEN}"})
        # --ack-after-store: exported means stored.
        assert exporter.export(server.spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        yield server
    finally:
        server.stop()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    capsys.readouterr()
    code = main([*argv, "--format", "json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def by_model(spans: list[ReadableSpan]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for span in spans:
        model = str((span.attributes or {})["gen_ai.response.model"])
        counts[model] = counts.get(model, 0) + 1
    return counts


def test_stats_on_the_store_answers_through_llmtel_serve(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, err = run_json(capsys, "stats", "--by", "model", "--endpoint", f"chdb://{served.store}")
    assert code == 0, err
    assert {row["model"]: row["calls"] for row in rows} == by_model(served.spans)
    assert {row["model"]: row["cost"] for row in rows}["local-model"] is None
    assert sum(row["errors"] for row in rows) == 1
    # The same from the environment's endpoint.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_EXPORTER_CLICKHOUSE_ENDPOINT", f"chdb://{served.store}")
        code, rows, err = run_json(capsys, "calls", "--limit", "100")
    assert code == 0, err
    assert sorted(row["span_id"] for row in rows) == sorted(f"{s.context.span_id:016x}" for s in served.spans)


def test_doctor_names_the_server_it_read_through(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks, err = run_json(capsys, "doctor", "--endpoint", f"chdb://{served.store}")
    assert code == 0, err
    store = next(check for check in checks if check["check"] == "store")
    assert store["status"] == "ok"
    assert store["detail"].startswith(f"llmtel serve at {served.url} for {served.store}")
    assert TOKEN not in store["detail"]
    rows = next(check for check in checks if check["check"] == "table llm_calls")
    assert rows["detail"] == f"{len(served.spans)} rows"


def test_writes_through_the_read_only_server_are_refused_in_one_line(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["prune", "--older-than", "1s", "--yes", "--endpoint", f"chdb://{served.store}"])
    err = capsys.readouterr().err
    assert code == 2 and "llmtel serve" in err and "--allow-writes" in err, err
    assert len(err.strip().splitlines()) == 1
    code, rows, _ = run_json(capsys, "stats", "--endpoint", f"chdb://{served.store}")
    assert code == 0 and rows[0]["calls"] == len(served.spans)  # nothing deleted


def test_once_the_server_stops_the_store_is_opened_directly(served: Served) -> None:
    # Last in the module: the server writes everything, removes its discovery file and releases the store.
    assert served.stop() == 0
    assert not discovery_path(str(served.store)).exists()
    environment = {**os.environ, "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT": f"chdb://{served.store}"}
    result = subprocess.run([sys.executable, "-m", "llmtel.exporter_clickhouse.cli", "stats", "--by", "model",
                             "--format", "json"], env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert {row["model"]: row["calls"] for row in json.loads(result.stdout)} == by_model(served.spans)
