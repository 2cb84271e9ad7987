"""The cost of an LLM call in USD, for ``gen_ai.usage.cost``.

Prices come from the table bundled with `genai-prices`_, looked up by the model the server
says it used (``gpt-4o-mini-2024-07-18``, not the requested ``gpt-4o-mini``), and from an
optional price file (``OTEL_INSTRUMENTATION_LLMTEL_PRICES_FILE``) whose entries come first::

    table = PriceTable(settings.prices_file)
    table.cost("openai", "gpt-4o-mini-2024-07-18", input_tokens=1200, output_tokens=300,
               cache_read_tokens=1024)   # ~= 0.0002832

Token counts follow the GenAI semantic conventions: ``input_tokens`` *includes* the cache-read
and cache-write tokens, ``output_tokens`` *includes* the reasoning tokens. So::

    cost = (input - cache_read - cache_write) * input_rate
           + cache_read * cache_read_rate + cache_write * cache_write_rate
           + (output - reasoning) * output_rate + reasoning * reasoning_rate
           + per_request_fee

where a rate the table does not give separately is the input rate (cache) or the output rate
(reasoning). A model we cannot find costs ``None``, never 0: no cost is better than a wrong one.

How the bundled table is read, and why:

* Never the network. genai-prices fetches fresh prices only while an ``UpdatePrices`` is
  started, and ``calc_price`` then uses that snapshot. We start none, and we read
  ``genai_prices.data`` (the data installed with the package) instead of the live snapshot,
  so costs do not change under a running process either.
* Lazily. ``import genai_prices`` pulls in pydantic (~150 ms); it happens on the first
  lookup of a model not in the cache, not when this module is imported.
* Once per (provider, model). genai-prices' ``calc_price`` takes ~50 µs a call (Decimal
  arithmetic, usage validation); we resolve each model once into a small rates object
  (unknown models cached as ``None`` too), and a call is a dict lookup and a few
  multiplications (~0.4 µs, ~4k CPU instructions).
* Tiered prices (OpenAI's long-context rates: every token at the higher rate once the input
  passes a threshold) and dated or time-of-day prices (a price change on a given day,
  DeepSeek's off-peak hours) are kept and chosen per call, the way genai-prices chooses them.
* Not priced: what the instrumentation does not count. Web searches and other per-use fees
  are left out; audio and image tokens are priced at the model's token rates (we get no
  split by modality); cache writes at the plain (5-minute) cache-write rate, even Anthropic's
  1-hour ones; service tiers (batch, flex, priority) at standard rates.
  Models priced only per second, character or page (whisper, tts) cost ``None``, and so does
  any output when the table has no output rate for the model. A model the table lists with
  no price at all (OpenRouter's ``:free`` models, moderation) costs 0.0, as in genai-prices.

The price file (JSON, or YAML when PyYAML is installed), in USD per million tokens::

    models:
      - provider: openai             # optional: any provider when absent
        model: my-finetune           # the exact name (case-insensitive), or instead:
        # match: {starts_with: "ft:gpt-4o-mini"}   (or ends_with, contains, equals, regex)
        input: 0.30
        output: 1.20
        cache_read: 0.15             # optional, defaults to input
        cache_write: 0.375           # optional, defaults to input
        reasoning: 1.20              # optional, defaults to output

``provider`` is the ``gen_ai.provider.name`` llmtel reports (``openai``, ``azure.ai.openai``)
or the genai-prices id (``azure``). ``model`` is compared with the name in the *response*,
which is often a dated snapshot (``gpt-4o-mini-2024-07-18``): to cover those, use
``match: {starts_with: gpt-4o-mini}``. The first entry that matches wins, before the bundled
table. Files ending in ``.json`` are JSON, ``.yaml``/``.yml`` YAML, others JSON when they
start with ``{``. A file with any mistake is ignored as a whole, with one warning line that
says what is wrong; it never stops the application.

.. _genai-prices: https://github.com/pydantic/genai-prices
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, Union

_logger = logging.getLogger(__name__)

# gen_ai.provider.name -> genai-prices provider ids, tried in order. Names not listed are
# looked up with genai-prices' own provider matching (its ids, e.g. `fireworks`, `cerebras`).
# Azure OpenAI deployments serve OpenAI models; when genai-prices has no Azure entry for the
# model, OpenAI's price is the best one there is.
_PRICES_PROVIDER_IDS: Mapping[str, tuple[str, ...]] = {
    "openai": ("openai",),
    "azure.ai.openai": ("azure", "openai"),
    "azure.ai.inference": ("azure",),
    "anthropic": ("anthropic",),
    "aws.bedrock": ("aws",),
    "cohere": ("cohere",),
    "deepseek": ("deepseek",),
    "gcp.gemini": ("google",),
    "gcp.vertex_ai": ("google",),
    "gcp.gen_ai": ("google",),
    "groq": ("groq",),
    "mistral_ai": ("mistral",),
    "perplexity": ("perplexity",),
    "x_ai": ("x-ai",),
    "openrouter": ("openrouter",),
    "together_ai": ("together",),
    "fireworks": ("fireworks",),
}

# Model names come from responses; a proxy that echoes arbitrary names must not grow the
# cache without end. Starting over is cheap next to a leak.
_MAX_CACHED_MODELS = 4096

_PER_TOKEN = Decimal(1_000_000)
_SECONDS_PER_DAY = 86_400.0

# genai-prices' price keys for the token kinds we count; the rest (audio hours, characters,
# web searches...) need counts the instrumentation does not have.
_INPUT, _OUTPUT = "input_mtok", "output_mtok"
_CACHE_READ, _CACHE_WRITE, _REASONING = "cache_read_mtok", "cache_write_mtok", "output_reasoning_mtok"
_PER_THOUSAND_REQUESTS = "requests_kcount"
_TOKEN_PRICE_KEYS = (_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE, _REASONING)

_now = time.time  # a module attribute so tests can move the clock for dated prices


# --- Rates: what a resolved model costs; `cost()` is the hot path. -----------------------------


# The rate classes are plain slotted classes rather than dataclasses: they are read on every
# call, and each dataclass decorator adds ~0.4 ms to this module's import.


class _TokenRates:
    """USD per token (and per request) of one model."""

    __slots__ = ("input", "output", "cache_read", "cache_write", "reasoning", "per_request", "has_output_rate")

    def __init__(
        self,
        input: float,
        output: float,
        cache_read: float,
        cache_write: float,
        reasoning: float,
        per_request: float = 0.0,
        has_output_rate: bool = True,
    ) -> None:
        self.input = input
        self.output = output
        self.cache_read = cache_read
        self.cache_write = cache_write
        self.reasoning = reasoning
        self.per_request = per_request
        self.has_output_rate = has_output_rate

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int, reasoning: int
    ) -> float | None:
        if output_tokens and not self.has_output_rate:
            return None
        uncached = input_tokens - cache_read - cache_write
        if uncached < 0:  # counts that break the conventions; never bill negative tokens
            uncached = 0
        visible = output_tokens - reasoning
        if visible < 0:
            visible = 0
        return (
            uncached * self.input
            + cache_read * self.cache_read
            + cache_write * self.cache_write
            + visible * self.output
            + reasoning * self.reasoning
            + self.per_request
        )


class _TieredRates:
    """Rates that change, for all tokens of a call, once its input passes a threshold.

    genai-prices' rule: the highest tier whose ``start`` the total input tokens exceed.
    """

    __slots__ = ("base", "tiers")

    def __init__(self, base: _TokenRates, tiers: tuple[tuple[int, _TokenRates], ...]) -> None:
        self.base = base
        self.tiers = tiers  # ascending by start

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int, reasoning: int
    ) -> float | None:
        rates = self.base
        for start, tier_rates in self.tiers:
            if input_tokens <= start:
                break
            rates = tier_rates
        return rates.cost(input_tokens, output_tokens, cache_read, cache_write, reasoning)


class _Since(NamedTuple):
    """Active from a UTC day on (a price change)."""

    start: float  # epoch seconds

    def active(self, now: float) -> bool:
        return now >= self.start


class _DailyWindow(NamedTuple):
    """Active between two UTC times of day (off-peak prices); may wrap past midnight."""

    start: float  # seconds after UTC midnight
    end: float

    def active(self, now: float) -> bool:
        second = now % _SECONDS_PER_DAY
        if self.end < self.start:
            return second >= self.start or second < self.end
        return self.start <= second < self.end


_ALWAYS = _Since(-math.inf)


class _ScheduledRates:
    """Prices that depend on when the call is made: the last listed active period wins,
    and with none active the first price applies (genai-prices' ``ModelInfo.get_prices``)."""

    __slots__ = ("periods", "default")

    def __init__(
        self,
        periods: tuple[tuple[_Since | _DailyWindow, _TokenRates | _TieredRates | None], ...],
        default: _TokenRates | _TieredRates | None,
    ) -> None:
        self.periods = periods  # last listed first
        self.default = default

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int, reasoning: int
    ) -> float | None:
        now = _now()
        rates = self.default
        for period, period_rates in self.periods:
            if period.active(now):
                rates = period_rates
                break
        if rates is None:
            return None
        return rates.cost(input_tokens, output_tokens, cache_read, cache_write, reasoning)


_Rates = Union[_TokenRates, _TieredRates, _ScheduledRates]

_FREE = _TokenRates(input=0.0, output=0.0, cache_read=0.0, cache_write=0.0, reasoning=0.0)


def _per_token(usd_per_million: Decimal | float) -> float:
    return float(Decimal(str(usd_per_million)) / _PER_TOKEN)


def _token_rates(
    input: Decimal | float,
    output: Decimal | float | None,
    cache_read: Decimal | float | None = None,
    cache_write: Decimal | float | None = None,
    reasoning: Decimal | float | None = None,
    per_thousand_requests: Decimal | float | None = None,
) -> _TokenRates:
    """Rates from USD per million tokens; a missing cache or reasoning rate is the plain one."""
    input_rate = _per_token(input)
    output_rate = _per_token(output) if output is not None else 0.0
    return _TokenRates(
        input=input_rate,
        output=output_rate,
        cache_read=_per_token(cache_read) if cache_read is not None else input_rate,
        cache_write=_per_token(cache_write) if cache_write is not None else input_rate,
        reasoning=_per_token(reasoning) if reasoning is not None else output_rate,
        per_request=float(Decimal(str(per_thousand_requests)) / 1000) if per_thousand_requests else 0.0,
        has_output_rate=output is not None,
    )


# --- The bundled genai-prices table -------------------------------------------------------------


class _BundledTable(NamedTuple):
    providers: list[Any]  # genai_prices.types.Provider
    by_id: Mapping[str, Any]
    find_provider: Callable[[list[Any], str], Any]


@functools.lru_cache(maxsize=1)
def _bundled_table() -> _BundledTable | None:
    """genai-prices' installed data, on first use. Never its auto-updated snapshot."""
    try:
        from genai_prices.data import providers
        from genai_prices.data_snapshot import find_provider_by_id
    except Exception as error:  # a broken install must not break the application
        _logger.warning("llmtel: cannot load the genai-prices price table (%s); no costs on spans", error)
        return None
    return _BundledTable(providers, {provider.id: provider for provider in providers}, find_provider_by_id)


def _bundled_model(table: _BundledTable, provider_name: str, model: str) -> Any | None:
    provider_ids = _PRICES_PROVIDER_IDS.get(provider_name)
    if provider_ids is None:
        provider = table.find_provider(table.providers, provider_name)
        provider_ids = (provider.id,) if provider is not None else ()
    for provider_id in provider_ids:
        provider = table.by_id.get(provider_id)
        if provider is None:
            continue
        # find_model matches genai-prices' aliases (dated snapshots, compact dates) and follows
        # the provider's own fallbacks (Azure -> OpenAI, Anthropic, ...).
        found = provider.find_model(model, all_providers=table.providers)
        if found is not None:
            return found
    return None


class _Unpriceable(Exception):
    """The table's price for a model uses something we cannot evaluate."""


def _rates_from_model_price(model_price: Any) -> _TokenRates | _TieredRates | None:
    """Rates from a genai-prices ``ModelPrice``; ``None`` when it is not priced by tokens."""
    prices = {key: value for key, value in vars(model_price).items() if value is not None and key[0] != "_"}
    if not prices:
        return _FREE
    if _INPUT not in prices:
        return None  # per second, character or page: counts we do not have
    starts = sorted({tier.start for key in _TOKEN_PRICE_KEYS for tier in getattr(prices.get(key), "tiers", ())})
    base = _rates_at(prices, None)
    if not starts:
        return base
    return _TieredRates(base, tuple((start, _rates_at(prices, start)) for start in starts))


def _rates_at(prices: Mapping[str, Any], tier_start: int | None) -> _TokenRates:
    """Flat rates for calls whose input exceeds ``tier_start`` (``None``: below every tier)."""

    def price(key: str) -> Decimal | None:
        value = prices.get(key)
        if value is None or isinstance(value, Decimal):
            return value
        if not hasattr(value, "tiers"):
            raise _Unpriceable(f"{key} is a {type(value).__name__}")
        applicable = value.base
        for tier in sorted(value.tiers, key=lambda tier: tier.start):
            if tier_start is not None and tier.start <= tier_start:
                applicable = tier.price
        return applicable

    return _token_rates(
        input=price(_INPUT),  # type: ignore[arg-type]  # checked by the caller
        output=price(_OUTPUT),
        cache_read=price(_CACHE_READ),
        cache_write=price(_CACHE_WRITE),
        reasoning=price(_REASONING),
        per_thousand_requests=price(_PER_THOUSAND_REQUESTS),
    )


def _period(constraint: Any) -> _Since | _DailyWindow:
    if constraint is None:
        return _ALWAYS
    start_date = getattr(constraint, "start_date", None)
    if isinstance(start_date, date):
        return _Since(datetime(start_date.year, start_date.month, start_date.day, tzinfo=timezone.utc).timestamp())
    start_time, end_time = getattr(constraint, "start_time", None), getattr(constraint, "end_time", None)
    if start_time is not None and end_time is not None:
        return _DailyWindow(_utc_second_of_day(start_time), _utc_second_of_day(end_time))
    raise _Unpriceable(f"unknown price constraint {type(constraint).__name__}")


def _utc_second_of_day(value: Any) -> float:
    # A naive time is UTC, as in genai-prices.
    offset = value.utcoffset()
    seconds = value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6
    return (seconds - (offset.total_seconds() if offset is not None else 0.0)) % _SECONDS_PER_DAY


def _rates_from_model(model: Any) -> _Rates | None:
    """Rates for a genai-prices ``ModelInfo`` (price variants such as batch are not used)."""
    if not isinstance(model.prices, list):
        return _rates_from_model_price(model.prices)
    periods = [(_period(price.constraint), _rates_from_model_price(price.prices)) for price in model.prices]
    if not periods:
        return None
    last_period, last_rates = periods[-1]
    if isinstance(last_period, _Since) and last_period.active(_now()):
        return last_rates  # the newest price has started and stays in force: no clock needed per call
    if all(rates is None for _, rates in periods):
        return None
    return _ScheduledRates(periods=tuple(reversed(periods)), default=periods[0][1])


# --- The user's price file ----------------------------------------------------------------------

_RATE_FIELDS = ("input", "output", "cache_read", "cache_write", "reasoning")
_REQUIRED_RATE_FIELDS = ("input", "output")
_ENTRY_FIELDS = frozenset({"provider", "model", "match", *_RATE_FIELDS})
_MATCH_KINDS = ("equals", "starts_with", "ends_with", "contains", "regex")


class _UserPrice(NamedTuple):
    provider: str | None  # lower case
    matches: Callable[[str], bool]  # called with the lower-case model name
    rates: _TokenRates

    def applies_to(self, provider: str, provider_ids: tuple[str, ...], model: str) -> bool:
        if self.provider is not None and self.provider != provider and self.provider not in provider_ids[:1]:
            return False
        return bool(self.matches(model))


def _read_price_file(path: str) -> tuple[_UserPrice, ...]:
    """The entries of a price file; none (after one warning) when it is missing or wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        _warn_ignored(path, f"cannot be read ({getattr(error, 'strerror', None) or error})")
        return ()
    if _looks_like_yaml(path, text):
        try:
            import yaml
        except ImportError:
            _warn_ignored(path, "is YAML but PyYAML is not installed (pip install 'llmtel[yaml]', or write it as JSON)")
            return ()
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            _warn_ignored(path, f"is not valid YAML ({_one_line(error)})")
            return ()
    else:
        try:
            document = json.loads(text)
        except ValueError as error:
            _warn_ignored(path, f"is not valid JSON ({_one_line(error)})")
            return ()
    entries, problems = _parse_prices(document)
    if problems:
        _warn_ignored(path, "; ".join(problems))
        return ()
    return entries


def _parse_prices(document: object) -> tuple[tuple[_UserPrice, ...], list[str]]:
    """The entries of a parsed price file and every problem found in it."""
    if not isinstance(document, dict) or set(document) != {"models"}:
        return (), ["expected a mapping with one key, 'models', holding a list of models"]
    raw_entries = document["models"]
    if not isinstance(raw_entries, list):
        return (), ["'models' must be a list"]
    entries: list[_UserPrice] = []
    problems: list[str] = []
    for index, raw_entry in enumerate(raw_entries):
        entry = _parse_entry(raw_entry, f"models[{index}]", problems)
        if entry is not None:
            entries.append(entry)
    return tuple(entries), problems


def _parse_entry(raw: object, where: str, problems: list[str]) -> _UserPrice | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {type(raw).__name__}")
        return None
    found = len(problems)
    unknown = sorted(str(key) for key in raw if key not in _ENTRY_FIELDS)
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_ENTRY_FIELDS))})")
    provider = raw.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        problems.append(f"{where}: 'provider' must be a non-empty string")
    matches = _parse_model_matcher(raw, where, problems)
    rates: dict[str, float] = {}
    for field in _RATE_FIELDS:
        value = raw.get(field)
        if value is None:
            if field in _REQUIRED_RATE_FIELDS:
                problems.append(f"{where}: missing '{field}' (USD per million tokens)")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            problems.append(f"{where}: '{field}' must be a number >= 0 (USD per million tokens), got {value!r}")
        else:
            rates[field] = value
    if len(problems) > found or matches is None:
        return None
    return _UserPrice(
        provider=provider.strip().lower() if isinstance(provider, str) else None,
        matches=matches,
        rates=_token_rates(**rates),
    )


def _parse_model_matcher(raw: Mapping[str, Any], where: str, problems: list[str]) -> Callable[[str], bool] | None:
    model, match = raw.get("model"), raw.get("match")
    if (model is None) == (match is None):
        problems.append(f"{where}: give either 'model' (the exact name) or 'match' ({{starts_with: ...}}, ...)")
        return None
    if model is not None:
        if not isinstance(model, str) or not model:
            problems.append(f"{where}: 'model' must be a non-empty string")
            return None
        return model.lower().__eq__
    if not isinstance(match, dict) or len(match) != 1 or next(iter(match)) not in _MATCH_KINDS:
        problems.append(f"{where}: 'match' must have exactly one of {', '.join(_MATCH_KINDS)}")
        return None
    ((kind, pattern),) = match.items()
    if not isinstance(pattern, str) or not pattern:
        problems.append(f"{where}: 'match.{kind}' must be a non-empty string")
        return None
    if kind == "regex":
        try:
            return re.compile(pattern, re.IGNORECASE).search  # type: ignore[return-value]
        except re.error as error:
            problems.append(f"{where}: 'match.regex' is not a valid regular expression ({error})")
            return None
    text = pattern.lower()
    if kind == "equals":
        return text.__eq__
    if kind == "starts_with":
        return lambda model_name: model_name.startswith(text)
    if kind == "ends_with":
        return lambda model_name: model_name.endswith(text)
    return lambda model_name: text in model_name


def _looks_like_yaml(path: str, text: str) -> bool:
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return True
    if suffix == ".json":
        return False
    return not text.lstrip().startswith(("{", "["))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _warn_ignored(path: str, problem: str) -> None:
    _logger.warning("llmtel: ignoring price file %s: %s; using the bundled genai-prices prices", path, problem)


# --- The table the instrumentation uses ---------------------------------------------------------


class PriceTable:
    """Prices of LLM calls: the user's price file first, then genai-prices' bundled table.

    Thread-safe: the cache is a dict whose entries are only ever added whole.
    """

    def __init__(self, user_prices_file: str | None = None) -> None:
        # Read now, so a broken file is reported at startup rather than at the first call.
        self._user_prices: tuple[_UserPrice, ...] = ()
        if user_prices_file:
            try:
                self._user_prices = _read_price_file(user_prices_file)
            except Exception as error:  # a bug of ours must not stop the application
                _warn_ignored(user_prices_file, f"cannot be used ({type(error).__name__}: {error})")
        self._resolved: dict[tuple[str, str], _Rates | None] = {}

    def cost(
        self,
        provider: str,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> float | None:
        """USD, or None when the model (or both token counts) is unknown."""
        if model is None or (input_tokens is None and output_tokens is None):
            return None
        try:
            rates = self._resolved[(provider, model)]
        except KeyError:
            rates = self._resolve(provider, model)
        if rates is None:
            return None
        return rates.cost(
            input_tokens or 0,
            output_tokens or 0,
            cache_read_tokens or 0,
            cache_write_tokens or 0,
            reasoning_tokens or 0,
        )

    def _resolve(self, provider: str, model: str) -> _Rates | None:
        try:
            rates = self._find_rates(provider, model)
        except Exception:  # odd data must cost a span its cost, never the application a call
            _logger.debug("llmtel: cannot price %s model %r", provider, model, exc_info=True)
            rates = None
        if len(self._resolved) >= _MAX_CACHED_MODELS:
            self._resolved.clear()
        self._resolved[(provider, model)] = rates
        return rates

    def _find_rates(self, provider: str, model: str) -> _Rates | None:
        provider_name = (provider or "").lower()
        model_name = model.lower()
        provider_ids = _PRICES_PROVIDER_IDS.get(provider_name, (provider_name,))
        for user_price in self._user_prices:
            if user_price.applies_to(provider_name, provider_ids, model_name):
                return user_price.rates
        table = _bundled_table()
        if table is None or not provider_name:
            return None
        found = _bundled_model(table, provider_name, model_name)
        if found is None:
            return None
        try:
            return _rates_from_model(found)
        except _Unpriceable as error:
            _logger.debug("llmtel: cannot price %s model %r: %s", provider, model, error)
            return None
