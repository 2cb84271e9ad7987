"""Which provider a client talks to, from its class and base URL.

``gen_ai.provider.name`` names the provider, not the SDK: an ``openai`` client pointed at
Groq is ``groq``. Any host we do not know (a proxy, a gateway, localhost) stays ``openai``,
and ``server.address`` tells those apart.
"""

from __future__ import annotations

from dataclasses import dataclass

OPENAI = "openai"
AZURE_OPENAI = "azure.ai.openai"

# Exact hosts of well-known OpenAI-compatible APIs -> provider names from the GenAI
# conventions' gen_ai.provider.name list (or, where it has none, the name genai-prices uses).
_KNOWN_HOSTS = {
    "api.openai.com": OPENAI,
    "openrouter.ai": "openrouter",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.together.xyz": "together_ai",
    "api.together.ai": "together_ai",
    "api.mistral.ai": "mistral_ai",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
    "api.fireworks.ai": "fireworks",
    "generativelanguage.googleapis.com": "gcp.gemini",
}
_AZURE_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")

# Providers whose chat streams honour stream_options.include_usage.
_STREAM_USAGE_PROVIDERS = frozenset({OPENAI, AZURE_OPENAI, "deepseek", "groq", "openrouter", "together_ai"})


@dataclass(frozen=True)
class Endpoint:
    provider: str
    address: str | None
    port: int | None
    stream_usage: bool


def provider_for_host(host: str | None, is_azure_client: bool = False) -> str:
    if is_azure_client:
        return AZURE_OPENAI
    if not host:
        return OPENAI
    host = host.lower()
    known = _KNOWN_HOSTS.get(host)
    if known is not None:
        return known
    if host.endswith(_AZURE_SUFFIXES):
        return AZURE_OPENAI
    return OPENAI


def endpoint_for_url(url: object, is_azure_client: bool = False) -> Endpoint:
    """The endpoint of an ``httpx``/``httpx2`` URL (anything with host, port and scheme)."""
    host = getattr(url, "host", None) or None
    port = getattr(url, "port", None)
    if port is None and host:
        port = 443 if getattr(url, "scheme", "https") == "https" else 80
    provider = provider_for_host(host, is_azure_client)
    return Endpoint(provider, host, port, provider in _STREAM_USAGE_PROVIDERS)


# Azure OpenAI rejects `stream_options` with a 400 before these API versions.
_AZURE_STREAM_OPTIONS_SINCE = "2024-09-01-preview"
_AZURE_STREAM_OPTIONS_GA = "2024-10-21"


def azure_accepts_stream_options(api_version: str | None) -> bool:
    """Whether an Azure OpenAI ``api-version`` accepts ``stream_options`` (``None``: the v1 API, yes)."""
    if not api_version:
        return True
    if api_version.endswith("-preview"):
        return api_version >= _AZURE_STREAM_OPTIONS_SINCE
    return api_version >= _AZURE_STREAM_OPTIONS_GA


_cache: dict[int, tuple[object, Endpoint]] = {}


def endpoint_of_client(client: object) -> Endpoint:
    """The endpoint of an openai client, cached per base URL object (clients may change it)."""
    # openai 3.x's `base_url` property imports a module on every read; `_base_url` is what it returns.
    url = getattr(client, "_base_url", None) or client.base_url  # type: ignore[attr-defined]
    entry = _cache.get(id(url))
    if entry is not None and entry[0] is url:
        return entry[1]
    from openai import AsyncAzureOpenAI, AzureOpenAI

    is_azure = isinstance(client, (AzureOpenAI, AsyncAzureOpenAI))
    endpoint = endpoint_for_url(url, is_azure)
    if is_azure and endpoint.stream_usage and not azure_accepts_stream_options(getattr(client, "_api_version", None)):
        endpoint = Endpoint(endpoint.provider, endpoint.address, endpoint.port, False)
    if len(_cache) > 256:
        _cache.clear()
    _cache[id(url)] = (url, endpoint)
    return endpoint
