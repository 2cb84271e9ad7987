"""``llmtel demo``: a real LLM app, traced into a fresh embedded store, then read back.

1. Start a real small model (SmolLM2-135M-Instruct via xllamacpp, see ``demo_model_server``)
   behind an OpenAI-compatible API on 127.0.0.1 — or use OpenAI itself with ``--openai``.
2. Run the example support bot, unchanged, as any app would run::

       OTEL_TRACES_EXPORTER=clickhouse OTEL_EXPORTER_CLICKHOUSE_ENDPOINT=chdb:///<store> \\
       OTEL_SERVICE_NAME=support-bot opentelemetry-instrument python examples/support_bot.py

3. When it has exited (its BatchSpanProcessor flushes at exit, and the store is free again),
   print ``llmtel stats --by model`` and ``llmtel trace <the trace it just made>``.

The example is ``examples/support_bot.py`` of the llmtel repository, the one copy of it: found
next to the package in a checkout (an editable install), else under the current directory, else
given with ``--app``. A wheel does not ship it; the demo then says where to get it.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from llmtel.exporter_clickhouse import environment_variables as env
from llmtel.exporter_clickhouse.config import ExporterConfig, process_environment
from llmtel.exporter_clickhouse.demo_model_server import (
    INSTALL_HINT,
    MODEL_ALIAS,
    LocalModelServer,
    ModelServerError,
    default_threads,
    find_model,
    missing_requirements,
)

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["SERVICE_NAME", "add_arguments", "find_example", "run"]

SERVICE_NAME = "support-bot"
EXAMPLE = Path("examples") / "support_bot.py"
_APP_TIMEOUT = 300.0
# Settings of the app's own exporter that would send its spans elsewhere than the demo's store.
_STORE_VARIABLES = (env.OTEL_EXPORTER_CLICKHOUSE_DATABASE, env.OTEL_EXPORTER_CLICKHOUSE_TRACES_TABLE_NAME,
                    env.OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA, env.OTEL_EXPORTER_CLICKHOUSE_USERNAME,
                    env.OTEL_EXPORTER_CLICKHOUSE_PASSWORD)


class DemoError(Exception):
    """A step of the demo failed; ``str()`` is one line naming the cause."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options."""
    parser.add_argument("--store", type=Path, default=None, metavar="PATH",
                        help="the embedded store directory to write (default: a new temporary directory)")
    parser.add_argument("--openai", action="store_true",
                        help="call OpenAI (needs OPENAI_API_KEY) instead of the local model")
    parser.add_argument("--app", type=Path, default=None, metavar="PATH",
                        help=f"the app to run (default: {EXAMPLE} of the llmtel checkout)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="CPU threads of the local model (default: half the cores)")


def find_example(explicit: Path | None = None) -> Path | None:
    """The support bot to run: ``explicit``, else the checkout's copy, else ./examples/."""
    if explicit is not None:
        return explicit.resolve() if explicit.is_file() else None
    checkout = Path(__file__).resolve().parent.parent  # exporter_clickhouse/ sits at the checkout's root
    for candidate in (checkout / EXAMPLE, Path.cwd() / EXAMPLE):
        if candidate.is_file():
            return candidate
    return None


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the app ran and its trace is in the store, 1 when not, 2 on bad usage."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # piped output keeps its long lines whole
    started = time.monotonic()
    try:
        app, api = _prepare(args)
    except DemoError as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    # The store (unless --store) and the model server's log go to a new directory of their own.
    workspace = Path(tempfile.mkdtemp(prefix="llmtel-demo-"))
    store = (args.store or workspace / "store").resolve()
    console.print(f"[bold]llmtel demo[/bold]: traces go to the embedded store [cyan]{store}[/cyan]")
    try:
        with _model_api(api, args.threads, workspace / "model-server.log", console) as (base_url, model):
            app_env = _app_environment(process_environment(), store, base_url=base_url, model=model,
                                       openai=api == "openai")
            app_stderr = _run_app(app, app_env, console)
        config = ExporterConfig.from_environment(app_env)
        try:
            trace_id, spans = _latest_trace(config)
        except DemoError:
            _print_tail(app_stderr, console)
            raise
    except DemoError as error:
        console.print(f"[red]error:[/red] {error}")
        return 1
    console.print(f"The app's trace [cyan]{trace_id}[/cyan] has {spans} spans "
                  f"({time.monotonic() - started:.1f} s so far).")
    return _show(config, trace_id, console)


def _prepare(args: argparse.Namespace) -> tuple[Path, str]:
    """The app to run and which API it calls ("local" or "openai"), or a DemoError saying what is missing."""
    app = find_example(args.app)
    if app is None:
        where = args.app or f"{EXAMPLE} (the package does not ship it)"
        raise DemoError(f"no app to run at {where}: run the demo from a checkout of llmtel, or pass --app PATH")
    if args.openai:
        if not process_environment().get("OPENAI_API_KEY", "").strip():
            raise DemoError("--openai needs OPENAI_API_KEY set")
        return app, "openai"
    missing = missing_requirements()
    if missing:
        raise DemoError(f"the local model needs {', '.join(missing)}: {INSTALL_HINT} (or use --openai)")
    if args.threads < 1:
        raise DemoError("--threads must be at least 1")
    return app, "local"


@contextlib.contextmanager
def _model_api(api: str, threads: int, log_path: Path, console: Console) -> Iterator[tuple[str, str]]:
    """The API the app calls, as (base URL, model): the local model server while inside, or OpenAI's ("", "")."""
    if api == "openai":
        yield "", ""
        return
    model = find_model()
    assert model is not None  # checked by _prepare
    began = time.monotonic()
    server = LocalModelServer(model, threads=threads, log_path=log_path)
    with console.status(f"Loading {MODEL_ALIAS} ({model.stat().st_size / 1e6:.0f} MB) with llama.cpp…"):
        try:
            base_url = server.start()
        except ModelServerError as error:
            raise DemoError(str(error)) from None
    try:
        console.print(f"Model {MODEL_ALIAS} serving at {base_url} (loaded in {time.monotonic() - began:.1f} s, "
                      f"log: {log_path})")
        yield base_url, MODEL_ALIAS
    finally:
        server.stop()


def _app_environment(environ: Mapping[str, str], store: Path, *, base_url: str, model: str,
                     openai: bool) -> dict[str, str]:
    """The app's environment: the user's, with its telemetry pointed at the demo's store."""
    app_env = {name: value for name, value in environ.items() if name not in _STORE_VARIABLES}
    app_env.update({
        "OTEL_TRACES_EXPORTER": "clickhouse",
        env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT: f"chdb://{store}",
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "PYTHONUNBUFFERED": "1",  # the app's lines appear as it prints them
    })
    app_env.pop("OTEL_RESOURCE_ATTRIBUTES", None)  # a service.name there would beat OTEL_SERVICE_NAME's
    if not openai:
        app_env.update({
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "not-needed-by-the-local-model",
            "SUPPORT_BOT_CHAT_MODEL": model,
            # One model answers chat and embeddings (and refuses audio: the app notes it and
            # goes on), so the trace names the model that really served each call.
            "SUPPORT_BOT_EMBEDDING_MODEL": model,
            "SUPPORT_BOT_TRANSCRIPTION_MODEL": model,
        })
    return app_env


def _instrument_command() -> str:
    beside = Path(sys.executable).parent / "opentelemetry-instrument"
    found = str(beside) if beside.is_file() else shutil.which("opentelemetry-instrument")
    if not found:
        raise DemoError("opentelemetry-instrument is not installed: pip install opentelemetry-distro")
    return found


def _run_app(app: Path, app_env: dict[str, str], console: Console) -> str:
    """Run the app under opentelemetry-instrument, showing its output; returns its stderr, DemoError if it fails."""
    from rich.markup import escape

    command = [_instrument_command(), sys.executable, str(app)]
    console.print(f"Running [bold]opentelemetry-instrument python {app.name}[/bold] (service {SERVICE_NAME})")
    began = time.monotonic()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, env=app_env, stdout=subprocess.PIPE, stderr=errors, text=True,
                                   stdin=subprocess.DEVNULL)
        timed_out = threading.Event()
        watchdog = threading.Timer(_APP_TIMEOUT, lambda: (timed_out.set(), process.kill()))
        watchdog.start()
        try:
            assert process.stdout is not None
            with console.status("The support bot is handling a request…"):
                for line in process.stdout:
                    console.print(f"  [dim]app │[/dim] {escape(line.rstrip())}")
            returncode = process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
        errors.seek(0)
        stderr = errors.read()
    if returncode != 0:
        _print_tail(stderr, console)
        why = f"timed out after {_APP_TIMEOUT:g} s" if timed_out.is_set() else f"exited with code {returncode}"
        raise DemoError(f"the app {why}")
    console.print(f"The app finished in {time.monotonic() - began:.1f} s; its spans are flushed.")
    return stderr


def _print_tail(stderr: str, console: Console) -> None:
    """The end of the app's stderr: why it failed, or why its exporter stored nothing."""
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    if tail:
        console.print(tail, markup=False)


def _latest_trace(config: ExporterConfig) -> tuple[str, int]:
    """The newest support-bot trace in the store and its span count; DemoError when there is none."""
    from llmtel.exporter_clickhouse.reader import ReadError, open_reader

    try:
        reader = open_reader(config)
    except ReadError as error:
        raise DemoError(str(error)) from None
    try:
        rows = reader.rows("demo_latest_trace.sql", {"service": SERVICE_NAME})
    except ReadError as error:
        raise DemoError(f"the app stored no spans ({error})") from None
    finally:
        reader.close()
    if not rows or not rows[0]["spans"]:
        raise DemoError(f"the app stored no spans in {config.endpoint}")
    return str(rows[0]["trace_id"]), int(rows[0]["spans"])


def _show(config: ExporterConfig, trace_id: str, console: Console) -> int:
    """Print `llmtel stats --by model` and `llmtel trace ID` for the store, as the CLI prints them."""
    from llmtel.exporter_clickhouse import cli

    store = ["--endpoint", config.endpoint, "--database", config.effective_database]
    worst = 0
    for argv in (["stats", "--by", "model"], ["trace", trace_id]):
        console.rule(f"llmtel {' '.join(argv)}")
        worst = max(worst, cli.main([*argv, *store]))
    console.print(f"Explore it: [bold]OTEL_EXPORTER_CLICKHOUSE_ENDPOINT={config.endpoint} llmtel calls[/bold]")
    return worst


def main(argv: list[str] | None = None) -> int:
    """``python -m llmtel.exporter_clickhouse.demo``: the demo without the ``llmtel`` command."""
    parser = argparse.ArgumentParser(prog="llmtel demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
