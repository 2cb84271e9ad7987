"""Tests for llmtel.instrumentation.cost: prices per call, the user's price file, no network.

Expected values are written out from the per-million-token prices in the genai-prices data
(0.2.3), not computed with the code under test; ``test_agrees_with_calc_price`` then compares
every model of the table with genai-prices' own ``calc_price``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data import providers as bundled_providers

from llmtel.instrumentation import cost as cost_module
from llmtel.instrumentation.cost import PriceTable

M = 1_000_000
NOON_UTC = datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch):
    """Sets the time dated and time-of-day prices are chosen by; starts at NOON_UTC."""

    def set_time(when: datetime) -> None:
        monkeypatch.setattr(cost_module, "_now", lambda: when.timestamp())

    set_time(NOON_UTC)
    return set_time


@pytest.fixture
def table(clock) -> PriceTable:
    return PriceTable()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


# --- Known models, priced from the published per-million rates -------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "tokens", "expected"),
    [
        # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output; dated snapshot name.
        (
            "openai",
            "gpt-4o-mini-2024-07-18",
            dict(input_tokens=1200, output_tokens=300, cache_read_tokens=1024),
            (176 * 0.15 + 1024 * 0.075 + 300 * 0.60) / M,
        ),
        ("openai", "gpt-4o-mini", dict(input_tokens=M, output_tokens=0), 0.15),
        ("openai", "gpt-4o-mini", dict(input_tokens=0, output_tokens=M), 0.60),
        # gpt-4o: $2.50 / $1.25 cached / $10.
        (
            "openai",
            "gpt-4o-2024-08-06",
            dict(input_tokens=10_000, output_tokens=500, cache_read_tokens=2_000),
            (8_000 * 2.50 + 2_000 * 1.25 + 500 * 10.0) / M,
        ),
        # o3-mini: $1.10 / $0.55 cached / $4.40; reasoning tokens are output tokens.
        (
            "openai",
            "o3-mini",
            dict(input_tokens=2_000, output_tokens=3_000, reasoning_tokens=2_500),
            (2_000 * 1.10 + 3_000 * 4.40) / M,
        ),
        # o1: $15 / $7.50 cached / $60.
        (
            "openai",
            "o1-2024-12-17",
            dict(input_tokens=5_000, output_tokens=1_000, cache_read_tokens=4_096, reasoning_tokens=800),
            (904 * 15.0 + 4_096 * 7.50 + 1_000 * 60.0) / M,
        ),
        # Embeddings: input only, $0.02.
        ("openai", "text-embedding-3-small", dict(input_tokens=5_000, output_tokens=0), 5_000 * 0.02 / M),
        ("openai", "text-embedding-3-small", dict(input_tokens=5_000, output_tokens=None), 5_000 * 0.02 / M),
        # Anthropic prices cache writes apart: $3 / $0.30 read / $3.75 write / $15.
        (
            "anthropic",
            "claude-3-5-sonnet-20241022",
            dict(input_tokens=10_000, output_tokens=1_000, cache_read_tokens=6_000, cache_write_tokens=3_000),
            (1_000 * 3.0 + 6_000 * 0.30 + 3_000 * 3.75 + 1_000 * 15.0) / M,
        ),
        # Perplexity prices reasoning apart ($2 / $8 / $3 reasoning) ...
        (
            "perplexity",
            "sonar-deep-research",
            dict(input_tokens=1_000, output_tokens=3_000, reasoning_tokens=2_000),
            (1_000 * 2.0 + 1_000 * 8.0 + 2_000 * 3.0) / M,
        ),
        # ... and charges per request: sonar $1 / $1 + $12 per 1000 requests.
        ("perplexity", "sonar", dict(input_tokens=1_000, output_tokens=100), (1_000 + 100) / M + 12 / 1000),
        # Azure OpenAI: Azure's own price where genai-prices has one (o3-mini), OpenAI's otherwise.
        ("azure.ai.openai", "o3-mini", dict(input_tokens=M, output_tokens=0), 1.10),
        ("azure.ai.openai", "gpt-4o-mini-2024-07-18", dict(input_tokens=M, output_tokens=M), 0.15 + 0.60),
        # Providers by their gen_ai.provider.name.
        ("deepseek", "deepseek-chat", dict(input_tokens=M, output_tokens=M), 0.27 + 1.10),  # at noon UTC
        ("x_ai", "grok-3", dict(input_tokens=M, output_tokens=M), 3.0 + 15.0),
        # Free models are 0.0, not None: moderation, OpenRouter's `:free` models.
        ("openai", "omni-moderation-latest", dict(input_tokens=1_000, output_tokens=0), 0.0),
        ("openrouter", "meta-llama/llama-3.3-70b-instruct:free", dict(input_tokens=1_000, output_tokens=100), 0.0),
    ],
)
def test_known_models(table: PriceTable, provider: str, model: str, tokens: dict, expected: float) -> None:
    result = table.cost(provider, model, **tokens)
    assert result is not None
    assert result == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_reasoning_tokens_at_output_rate_unless_priced_apart(table: PriceTable) -> None:
    without = table.cost("openai", "o3-mini", 1_000, 5_000)
    assert table.cost("openai", "o3-mini", 1_000, 5_000, reasoning_tokens=4_000) == pytest.approx(without)
    cheaper = table.cost("perplexity", "sonar-deep-research", 1_000, 5_000, reasoning_tokens=4_000)
    assert cheaper == pytest.approx((1_000 * 2.0 + 1_000 * 8.0 + 4_000 * 3.0) / M)


def test_cached_tokens_are_part_of_input_tokens(table: PriceTable) -> None:
    uncached = table.cost("openai", "gpt-4o-mini", 10_000, 0)
    cached = table.cost("openai", "gpt-4o-mini", 10_000, 0, cache_read_tokens=10_000)
    assert uncached == pytest.approx(10_000 * 0.15 / M)
    assert cached == pytest.approx(10_000 * 0.075 / M)


def test_long_context_tier_prices_every_token_once_input_passes_it(table: PriceTable) -> None:
    # gpt-5.4: $2.50 / $0.25 cached / $15, and $5 / $0.50 / $22.50 for inputs over 272k tokens.
    assert table.cost("openai", "gpt-5.4", 272_000, 1_000) == pytest.approx((272_000 * 2.5 + 1_000 * 15) / M)
    assert table.cost("openai", "gpt-5.4", 272_001, 1_000) == pytest.approx((272_001 * 5.0 + 1_000 * 22.5) / M)
    assert table.cost("openai", "gpt-5.4", 300_000, 1_000, cache_read_tokens=100_000) == pytest.approx(
        (200_000 * 5.0 + 100_000 * 0.5 + 1_000 * 22.5) / M
    )


def test_audio_and_image_tokens_are_priced_at_the_token_rates(table: PriceTable) -> None:
    # A known limit: the instrumentation reports no split by modality, so gpt-image-1's image
    # input ($10) is priced like its text input ($5). This pins the behaviour the docs state.
    assert table.cost("openai", "gpt-image-1", 100, 1_000) == pytest.approx((100 * 5.0 + 1_000 * 40.0) / M)


def test_off_peak_prices_follow_the_clock(table: PriceTable, clock) -> None:
    # deepseek-chat: $0.27 / $0.07 cache hit / $1.10 from 00:30 to 16:30 UTC, half that otherwise.
    tokens = dict(input_tokens=M, output_tokens=M, cache_read_tokens=M // 2)
    assert table.cost("deepseek", "deepseek-chat", **tokens) == pytest.approx(0.5 * 0.27 + 0.5 * 0.07 + 1.10)
    clock(datetime(2026, 3, 4, 20, 0, tzinfo=timezone.utc))  # same table: chosen per call, not cached
    assert table.cost("deepseek", "deepseek-chat", **tokens) == pytest.approx(0.5 * 0.135 + 0.5 * 0.035 + 0.55)


def test_dated_price_change(clock) -> None:
    # o3 cost $10 / $40 until 2025-06-10, then $2 / $8.
    clock(datetime(2025, 6, 9, 23, 59, tzinfo=timezone.utc))
    assert PriceTable().cost("openai", "o3", M, M) == pytest.approx(50.0)
    clock(datetime(2025, 6, 10, 0, 0, tzinfo=timezone.utc))
    assert PriceTable().cost("openai", "o3", M, M) == pytest.approx(10.0)


# --- Unknown models and counts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "no-such-model"),
        ("openai", "claude-3-5-sonnet-20241022"),  # a model of another provider is not a guess we make
        ("azure.ai.openai", "my-prod-deployment"),  # an Azure deployment name
        ("acme", "gpt-4o-mini"),  # a provider genai-prices does not know
        ("", "gpt-4o-mini"),
        ("openai", "whisper-1"),  # priced per audio hour: counts we do not have
        ("openai", "tts-1"),  # priced per character
    ],
)
def test_unknown_model_has_no_cost(table: PriceTable, provider: str, model: str) -> None:
    assert table.cost(provider, model, 1_000, 100) is None


def test_unknown_counts(table: PriceTable) -> None:
    assert table.cost("openai", None, 1_000, 100) is None
    assert table.cost("openai", "gpt-4o-mini", None, None) is None
    assert table.cost("openai", "gpt-4o-mini", None, 1_000) == pytest.approx(1_000 * 0.60 / M)
    # Output with no output price (embeddings) is unknown, not free.
    assert table.cost("openai", "text-embedding-3-small", 1_000, 10) is None


def test_inconsistent_counts_never_bill_negative_tokens(table: PriceTable) -> None:
    # More cached than input tokens breaks the conventions; the cached ones are still billed.
    assert table.cost("openai", "gpt-4o-mini", 100, 0, cache_read_tokens=200) == pytest.approx(200 * 0.075 / M)
    assert table.cost("openai", "o3-mini", 0, 100, reasoning_tokens=300) == pytest.approx(300 * 4.40 / M)


def test_agrees_with_calc_price(table: PriceTable) -> None:
    """Every model in genai-prices' table against its own calc_price, at a fixed time."""
    usages = [
        dict(input_tokens=1_000, output_tokens=0),
        dict(input_tokens=1_000, output_tokens=500),
        dict(input_tokens=5_000, output_tokens=2_000, cache_read=3_000, cache_write=500, reasoning=1_500),
        dict(input_tokens=400_000, output_tokens=1_000, cache_read=100_000),  # above every long-context tier
    ]
    provider_names = {"azure": "azure.ai.openai", "x-ai": "x_ai", "mistral": "mistral_ai", "google": "gcp.gemini"}
    compared, mismatches = 0, []
    for provider in bundled_providers:
        for model in provider.models:
            priced = {key for key, value in vars(model.get_prices(NOON_UTC)).items() if value is not None}
            for usage in usages:
                ours = table.cost(
                    provider_names.get(provider.id, provider.id),
                    model.id,
                    usage["input_tokens"],
                    usage["output_tokens"],
                    usage.get("cache_read", 0),
                    usage.get("cache_write", 0),
                    usage.get("reasoning", 0),
                )
                genai_usage = Usage(
                    input_tokens=usage["input_tokens"],
                    output_tokens=usage["output_tokens"],
                    cache_read_tokens=usage.get("cache_read", 0),
                    cache_write_tokens=usage.get("cache_write", 0),
                    output_reasoning_tokens=usage.get("reasoning", 0),
                )
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        theirs = float(
                            calc_price(
                                genai_usage, model.id, provider_id=provider.id, genai_request_timestamp=NOON_UTC
                            ).total_price
                        )
                except LookupError:  # the model's id is not one of its own names
                    expected = None
                else:
                    not_by_tokens = priced and "input_mtok" not in priced
                    unpriced_output = priced and usage["output_tokens"] and "output_mtok" not in priced
                    expected = None if not_by_tokens or unpriced_output else theirs
                if expected is None:
                    ok = ours is None
                else:
                    compared += 1
                    ok = ours is not None and ours == pytest.approx(expected, rel=1e-9, abs=1e-15)
                if not ok:
                    mismatches.append((provider.id, model.id, usage, ours, expected))
    assert not mismatches, mismatches[:10]
    assert compared > 5_000  # the loop really priced the table


# --- Caching ---------------------------------------------------------------------------------


def test_each_model_is_resolved_once(table: PriceTable, monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up = []
    real_lookup = cost_module._bundled_model

    def counting_lookup(bundled, provider, model):
        looked_up.append((provider, model))
        return real_lookup(bundled, provider, model)

    monkeypatch.setattr(cost_module, "_bundled_model", counting_lookup)
    for _ in range(3):
        assert table.cost("openai", "gpt-4o-mini", 10, 10) is not None
        assert table.cost("openai", "no-such-model", 10, 10) is None
    assert looked_up == [("openai", "gpt-4o-mini"), ("openai", "no-such-model")]


def test_cache_is_bounded(table: PriceTable, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost_module, "_MAX_CACHED_MODELS", 3)
    for index in range(10):
        table.cost("openai", f"echoed-name-{index}", 10, 10)
    assert len(table._resolved) <= 3
    assert table.cost("openai", "gpt-4o-mini", M, 0) == pytest.approx(0.15)


# --- No network, lazy loading ----------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


def test_no_network_and_no_price_updates() -> None:
    """In a fresh process with every way out refused, pricing works and nothing tries to fetch."""
    result = run_python(
        """
        import socket, threading

        attempts = []

        def refuse(*args, **kwargs):
            attempts.append(args)
            raise OSError("network disabled by test_cost")

        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = socket.getaddrinfo = refuse
        try:
            import httpx2
            httpx2.Client.__init__ = httpx2.AsyncClient.__init__ = refuse
            httpx2.get = httpx2.request = refuse
        except ImportError:
            pass

        from llmtel.instrumentation.cost import PriceTable

        table = PriceTable()
        assert table.cost("openai", "gpt-4o-mini", 1_000_000, 0) == 0.15
        assert table.cost("openai", "no-such-model", 1, 1) is None

        from genai_prices import update_prices
        assert update_prices._shared_updater.thread is None
        assert update_prices._shared_updater.ref_count == 0
        assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]
        assert not attempts, attempts
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.fixture
def reload_bundled_table():
    """Makes the next lookup load genai-prices' table again (it is loaded once per process)."""
    cost_module._bundled_table.cache_clear()
    yield
    cost_module._bundled_table.cache_clear()


def test_never_starts_the_updater(monkeypatch: pytest.MonkeyPatch, reload_bundled_table) -> None:
    from genai_prices.update_prices import UpdatePrices

    def fail(*args, **kwargs):
        pytest.fail("genai-prices auto-update was triggered")

    monkeypatch.setattr(UpdatePrices, "start", fail)
    monkeypatch.setattr(UpdatePrices, "fetch", fail)
    assert PriceTable().cost("openai", "gpt-4o", M, 0) == pytest.approx(2.50)


def test_ignores_prices_installed_by_someone_elses_auto_update(
    monkeypatch: pytest.MonkeyPatch, reload_bundled_table
) -> None:
    # Another library in the process may run genai-prices' UpdatePrices; its snapshot (here an
    # empty one) must not change our costs: we price from the installed data only.
    from genai_prices import data_snapshot

    empty = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", empty)
    assert PriceTable().cost("openai", "gpt-4o-mini", M, 0) == pytest.approx(0.15)


def test_import_and_construction_do_not_load_genai_prices() -> None:
    result = run_python(
        """
        import sys
        from llmtel.instrumentation.cost import PriceTable

        table = PriceTable()
        assert "genai_prices" not in sys.modules, "genai_prices imported before the first lookup"
        table.cost("openai", "gpt-4o-mini", 1, 1)
        assert "genai_prices" in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- The user's price file -------------------------------------------------------------------

PRICES_JSON = {
    "models": [
        {"provider": "openai", "model": "gpt-4o-mini", "input": 1.0, "output": 2.0},
        {
            "model": "My-Finetune",
            "input": 0.30,
            "output": 1.20,
            "cache_read": 0.15,
            "cache_write": 0.375,
            "reasoning": 1.50,
        },
        {"provider": "openai", "match": {"starts_with": "ft:gpt-4o-mini"}, "input": 0.30, "output": 1.20},
        {"provider": "azure", "match": {"regex": "^prod-.*-deployment$"}, "input": 2.0, "output": 8.0},
    ]
}

PRICES_YAML = """\
# USD per million tokens
models:
  - provider: openai            # optional; matches any provider when absent
    model: gpt-4o-mini
    input: 1.0
    output: 2.0
  - model: My-Finetune
    input: 0.30
    output: 1.20
    cache_read: 0.15            # optional; defaults to input
    cache_write: 0.375          # optional; defaults to input
    reasoning: 1.50             # optional; defaults to output
  - provider: openai
    match: {starts_with: "ft:gpt-4o-mini"}
    input: 0.30
    output: 1.20
  - provider: azure
    match: {regex: "^prod-.*-deployment$"}
    input: 2.0
    output: 8.0
"""


@pytest.fixture(params=["json", "yaml"])
def user_table(request, tmp_path: Path, clock, caplog) -> PriceTable:
    if request.param == "json":
        path = write(tmp_path, "prices.json", json.dumps(PRICES_JSON))
    else:
        pytest.importorskip("yaml")
        path = write(tmp_path, "prices.yaml", PRICES_YAML)
    with caplog.at_level(logging.WARNING, logger=cost_module.__name__):
        table = PriceTable(path)
    assert not caplog.records
    return table


def test_user_file_overrides_a_bundled_price(user_table: PriceTable) -> None:
    assert user_table.cost("openai", "gpt-4o-mini", M, M) == pytest.approx(1.0 + 2.0)
    # `model` is the exact name: the dated snapshot keeps the bundled price ...
    assert user_table.cost("openai", "gpt-4o-mini-2024-07-18", M, M) == pytest.approx(0.15 + 0.60)
    # ... and the entry is for OpenAI only; Azure falls back to the bundled OpenAI price.
    assert user_table.cost("azure.ai.openai", "gpt-4o-mini", M, M) == pytest.approx(0.15 + 0.60)


def test_user_file_adds_models(user_table: PriceTable) -> None:
    # Any provider, case-insensitive name, every rate given.
    for provider in ("openai", "groq"):
        cost = user_table.cost(
            provider, "my-finetune", 1_000, 500, cache_read_tokens=400, cache_write_tokens=100, reasoning_tokens=200
        )
        assert cost == pytest.approx((500 * 0.30 + 400 * 0.15 + 100 * 0.375 + 300 * 1.20 + 200 * 1.50) / M)
    # Prefix match; cache reads default to the input rate, reasoning to the output rate.
    fine_tune = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
    assert user_table.cost("openai", fine_tune, 1_000, 100, cache_read_tokens=500, reasoning_tokens=50) == (
        pytest.approx((1_000 * 0.30 + 100 * 1.20) / M)
    )
    # The provider may be genai-prices' id (azure) for the reported name (azure.ai.openai).
    assert user_table.cost("azure.ai.openai", "prod-gpt-deployment", M, 0) == pytest.approx(2.0)
    assert user_table.cost("openai", "prod-gpt-deployment", M, 0) is None
    # Everything else still comes from the bundled table.
    assert user_table.cost("openai", "gpt-4o", M, 0) == pytest.approx(2.50)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("prices.json", '{"models": [', "is not valid JSON"),
        ("prices.json", "[]", "expected a mapping with one key, 'models'"),
        ("prices.json", '{"prices": []}', "expected a mapping with one key, 'models'"),
        ("prices.json", '{"models": {"model": "x"}}', "'models' must be a list"),
        ("prices.json", '{"models": ["gpt-4o-mini"]}', "models[0]: expected a mapping"),
        ("prices.json", '{"models": [{"model": "x", "input": 1.0}]}', "models[0]: missing 'output'"),
        ("prices.json", '{"models": [{"model": "x", "input": -1, "output": 1}]}', "'input' must be a number >= 0"),
        ("prices.json", '{"models": [{"model": "x", "input": "1", "output": 1}]}', "'input' must be a number >= 0"),
        ("prices.json", '{"models": [{"model": "x", "input": true, "output": 1}]}', "'input' must be a number"),
        (
            "prices.json",
            '{"models": [{"model": "x", "input": 1, "output": 1, "cached_input": 0.5}]}',
            "unknown key(s) cached_input",
        ),
        ("prices.json", '{"models": [{"input": 1, "output": 1}]}', "give either 'model'"),
        (
            "prices.json",
            '{"models": [{"model": "x", "match": {"starts_with": "x"}, "input": 1, "output": 1}]}',
            "give either 'model'",
        ),
        ("prices.json", '{"models": [{"match": {"prefix": "x"}, "input": 1, "output": 1}]}', "'match' must have"),
        ("prices.json", '{"models": [{"match": {"regex": "("}, "input": 1, "output": 1}]}', "not a valid regular"),
        ("prices.json", '{"models": [{"provider": 3, "model": "x", "input": 1, "output": 1}]}', "'provider' must"),
        ("prices.yaml", "models:\n  - model: x\n   input: [", "is not valid YAML"),
        ("prices", "models: 3", "'models' must be a list"),  # no suffix, not JSON-looking: read as YAML
    ],
)
def test_malformed_file_warns_once_and_falls_back(
    tmp_path: Path, clock, caplog, name: str, text: str, problem: str
) -> None:
    if "yaml" in name or not text.startswith(("{", "[")):
        pytest.importorskip("yaml")
    path = write(tmp_path, name, text)
    with caplog.at_level(logging.WARNING, logger=cost_module.__name__):
        table = PriceTable(path)
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert path in message and problem in message, message
    assert "\n" not in message
    assert table.cost("openai", "gpt-4o-mini", M, 0) == pytest.approx(0.15)


def test_one_bad_entry_discards_the_whole_file(tmp_path: Path, clock, caplog) -> None:
    document = {
        "models": [
            {"model": "gpt-4o-mini", "input": 1.0, "output": 2.0},
            {"model": "a", "input": 1.0},
            {"model": "b", "output": 1.0, "cache_reads": 1.0},
        ]
    }
    path = write(tmp_path, "prices.json", json.dumps(document))
    with caplog.at_level(logging.WARNING, logger=cost_module.__name__):
        table = PriceTable(path)
    [record] = caplog.records  # every problem, in one line
    assert "models[1]: missing 'output'" in record.getMessage()
    assert "models[2]: unknown key(s) cache_reads" in record.getMessage()
    assert "models[2]: missing 'input'" in record.getMessage()
    assert table.cost("openai", "gpt-4o-mini", M, 0) == pytest.approx(0.15)


def test_missing_file_warns_and_falls_back(tmp_path: Path, clock, caplog) -> None:
    path = str(tmp_path / "nowhere.json")
    with caplog.at_level(logging.WARNING, logger=cost_module.__name__):
        table = PriceTable(path)
    [record] = caplog.records
    assert path in record.getMessage() and "cannot be read" in record.getMessage()
    assert table.cost("openai", "gpt-4o-mini", M, 0) == pytest.approx(0.15)


def test_yaml_file_without_pyyaml(tmp_path: Path, clock, caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now raises ImportError
    path = write(tmp_path, "prices.yml", PRICES_YAML)
    with caplog.at_level(logging.WARNING, logger=cost_module.__name__):
        table = PriceTable(path)
    [record] = caplog.records
    message = record.getMessage()
    assert path in message and "PyYAML is not installed" in message and "\n" not in message
    assert table.cost("openai", "gpt-4o-mini", M, 0) == pytest.approx(0.15)
