"""Replay recorded OpenAI traffic (VCR cassettes) through the real ``openai`` client.

A fixture module for the conformance test: it reads the cassettes OpenLLMetry recorded against
the real OpenAI, Azure OpenAI and DeepSeek APIs, turns each recorded request back into the
``openai`` call that made it, and runs that call under vcrpy in record mode ``none``::

    replay = ReplaySession().replay_cassette(path, observe=collect_spans)
    for call in replay.calls:
        call.interaction, call.plan, call.outcome, call.observed

vcrpy (>= 9.4) patches ``httpx2``'s transports as well as ``httpx``'s, so the client keeps its
own default ``httpx2`` client and transport: nothing in the SDK's request path is replaced.

How a recorded request becomes a call:

- the URL path picks the resource method (:data:`ENDPOINTS`); whatever precedes the endpoint
  in the URL becomes ``base_url`` (``/v1``, DeepSeek's ``/beta``, a local proxy), and an Azure
  URL (``/openai/deployments/{d}/...?api-version=``) becomes an ``AzureOpenAI`` client;
- the JSON body becomes keyword arguments (keys the method no longer knows go to
  ``extra_body``, so the request body stays the recorded one);
- the SDK's request headers tell how the call was made: ``X-Stainless-Async`` (async client),
  ``X-Stainless-Raw-Response`` (``.with_raw_response``), ``X-Stainless-Helper-Method``
  (``chat.completions.parse``) and ``X-Stainless-Stream-Helper`` (``threads.runs.stream``).

Requests are matched on method, URI and JSON body (:func:`json_body_matcher`). Interactions
that the ``openai`` client did not make (the vision tests downloading an image) are not
replayed; :func:`plan_call` returns ``None`` for them.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import openai
import vcr
from vcr.cassette import Cassette
from vcr.filters import decode_response
from vcr.request import Request

CASSETTE_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "cassettes" / "openllmetry"
"""Where the recorded cassettes live: ``<repo>/../shared/cassettes/openllmetry`` (never copied
into the repository; see its SOURCE.md)."""

API_KEY = "test-key"


def cassette_paths(root: Path = CASSETTE_ROOT) -> list[Path]:
    """Every cassette under ``root``, in a stable order."""
    return sorted(root.rglob("*.yaml"))


# --- Matching -----------------------------------------------------------------------------

# What an instrumentation may add to a streamed chat request on its own: llmtel asks for the
# usage chunk (OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE) and hides it from the caller again.
# A recorded stream without the option still answers such a request.
INSTRUMENTATION_ADDED_STREAM_KEYS: dict[str, Any] = {"stream_options": {"include_usage": True}}


def _json_or_bytes(body: bytes | str | None) -> Any:
    if body is None or body == b"" or body == "":
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body


def _drop_added_keys(replayed: dict[str, Any], recorded: dict[str, Any], path: str) -> dict[str, Any]:
    """``replayed`` without the keys of :data:`INSTRUMENTATION_ADDED_STREAM_KEYS` the recording lacks."""
    if replayed.get("stream") is not True or not path.endswith("/chat/completions"):
        return replayed
    tolerated = INSTRUMENTATION_ADDED_STREAM_KEYS
    return {
        key: value
        for key, value in replayed.items()
        if not (key in tolerated and key not in recorded and value == tolerated[key])
    }


def json_body_matcher(tolerated: list[str]) -> Callable[[Request, Request], None]:
    """A vcrpy matcher: bodies equal as JSON, allowing :data:`INSTRUMENTATION_ADDED_STREAM_KEYS`.

    The URIs of requests that matched only thanks to that allowance are appended to ``tolerated``.
    """

    def json_body(replayed: Request, recorded: Request) -> None:
        # vcrpy passes the request being made first, the recorded one second.
        new, old = _json_or_bytes(replayed.body), _json_or_bytes(recorded.body)
        if isinstance(new, dict) and isinstance(old, dict) and new != old:
            new = _drop_added_keys(new, old, urlsplit(replayed.uri).path)
            if new == old:
                tolerated.append(replayed.uri)
        if new != old:
            raise AssertionError(f"request bodies differ: {_short(new)} != {_short(old)}")

    return json_body


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def vcr_config(tolerated: list[str]) -> vcr.VCR:
    """vcrpy in replay-only mode, matching on method, URI and JSON body (see :func:`json_body_matcher`)."""
    config = vcr.VCR(record_mode="none", match_on=("method", "uri", "json_body"))
    config.register_matcher("json_body", json_body_matcher(tolerated))
    return config


# --- Recorded interactions ----------------------------------------------------------------


@dataclass(frozen=True)
class Interaction:
    """One recorded request and its response, read from a cassette."""

    cassette: str
    index: int
    method: str
    uri: str
    headers: dict[str, str]  # lower-cased names, first value
    body: Any  # parsed JSON, or None
    status: int
    response_headers: dict[str, str]
    response_body: bytes  # decompressed

    @property
    def path(self) -> str:
        return urlsplit(self.uri).path

    @property
    def is_stream(self) -> bool:
        return self.response_headers.get("content-type", "").startswith("text/event-stream")

    @property
    def label(self) -> str:
        return f"{self.cassette}[{self.index}] {self.method} {self.path}"


def _first_values(headers: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, values in headers.items():
        value = values[0] if isinstance(values, list) else values
        result[name.lower()] = value.decode() if isinstance(value, bytes) else str(value)
    return result


def interactions_of(cassette: Cassette, name: str) -> list[Interaction]:
    """The loaded cassette's interactions, with response bodies decompressed."""
    interactions = []
    for index, (request, response) in enumerate(cassette.data):
        decoded = decode_response(copy.deepcopy(response))
        body = decoded["body"]["string"]
        interactions.append(
            Interaction(
                cassette=name,
                index=index,
                method=request.method.upper(),
                uri=request.uri,
                headers=_first_values(dict(request.headers)),
                body=_json_or_bytes(request.body),
                status=int(response["status"]["code"]),
                response_headers=_first_values(decoded["headers"]),
                response_body=body.encode() if isinstance(body, str) else body,
            )
        )
    return interactions


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of a recorded server-sent-event body, in order (``[DONE]`` dropped)."""
    events = []
    for block in re.split(r"\r?\n\r?\n", body.decode("utf-8")):
        data = "\n".join(line[5:].lstrip(" ") for line in block.splitlines() if line.startswith("data:"))
        if data and data != "[DONE]":
            events.append(json.loads(data))
    return events


# --- Reconstructing the call --------------------------------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    """Which client made the call: enough to build an equivalent one."""

    base_url: str | None = None  # plain OpenAI-compatible client
    azure_endpoint: str | None = None
    azure_deployment: str | None = None
    api_version: str | None = None
    is_async: bool = False

    def build(self) -> openai.OpenAI | openai.AsyncOpenAI | openai.AzureOpenAI | openai.AsyncAzureOpenAI:
        if self.azure_endpoint is not None:
            azure_cls = openai.AsyncAzureOpenAI if self.is_async else openai.AzureOpenAI
            return azure_cls(
                azure_endpoint=self.azure_endpoint,
                azure_deployment=self.azure_deployment,
                api_version=self.api_version,
                api_key=API_KEY,
                max_retries=0,
            )
        client_cls = openai.AsyncOpenAI if self.is_async else openai.OpenAI
        return client_cls(base_url=self.base_url, api_key=API_KEY, max_retries=0)


@dataclass(frozen=True)
class Endpoint:
    """A recorded URL path mapped onto an ``openai`` resource method."""

    http_method: str
    pattern: re.Pattern[str]  # matched at the end of the URL path; named groups are path params
    resource: str  # attribute path from the client, e.g. "chat.completions"
    method: str
    operation: str  # short name used in reports


def _endpoint(http_method: str, pattern: str, resource: str, method: str) -> Endpoint:
    return Endpoint(http_method, re.compile(pattern + "$"), resource, method, f"{resource}.{method}")


_ID = r"(?P<{}>[^/]+)"
ENDPOINTS: tuple[Endpoint, ...] = (
    _endpoint("POST", "/chat/completions", "chat.completions", "create"),
    _endpoint("POST", "/completions", "completions", "create"),
    _endpoint("POST", "/embeddings", "embeddings", "create"),
    _endpoint("POST", "/responses", "responses", "create"),
    _endpoint("POST", "/images/generations", "images", "generate"),
    _endpoint("POST", "/assistants", "beta.assistants", "create"),
    _endpoint("GET", "/assistants/" + _ID.format("assistant_id"), "beta.assistants", "retrieve"),
    _endpoint("POST", "/threads", "beta.threads", "create"),
    _endpoint("POST", "/threads/" + _ID.format("thread_id") + "/messages", "beta.threads.messages", "create"),
    _endpoint("GET", "/threads/" + _ID.format("thread_id") + "/messages", "beta.threads.messages", "list"),
    _endpoint("POST", "/threads/" + _ID.format("thread_id") + "/runs", "beta.threads.runs", "create"),
    _endpoint(
        "GET",
        "/threads/" + _ID.format("thread_id") + "/runs/" + _ID.format("run_id"),
        "beta.threads.runs",
        "retrieve",
    ),
)

# X-Stainless-Helper-Method / X-Stainless-Stream-Helper values → the method that sends them today.
# parse() gets the recorded ``response_format`` dict, not the pydantic class that produced it (the
# class is not recorded), so the request is identical and ``message.parsed`` is None both ways.
HELPER_METHODS = {
    "chat.completions.parse": "parse",
    "beta.chat.completions.parse": "parse",  # its name from when it lived under client.beta
}
STREAM_HELPERS = {"threads.runs.create_and_stream": "stream"}

_AZURE_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/")


@dataclass(frozen=True)
class CallPlan:
    """The ``openai`` call that reproduces one recorded request."""

    interaction: Interaction
    client: ClientSpec
    endpoint: Endpoint
    method: str  # the method called on the resource (create, parse, stream, ...)
    raw_response: bool
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        prefix = "async " if self.client.is_async else ""
        raw = "with_raw_response." if self.raw_response else ""
        stream = " (stream)" if self.streams else ""
        return f"{prefix}{self.endpoint.resource}.{raw}{self.method}{stream}"

    @property
    def streams(self) -> bool:
        return self.method == "stream" or self.kwargs.get("stream") is True


def _client_spec(interaction: Interaction, endpoint_start: int) -> ClientSpec:
    parts = urlsplit(interaction.uri)
    is_async = interaction.headers.get("x-stainless-async", "false") != "false"
    azure = _AZURE_PATH.match(parts.path)
    if azure is not None:
        return ClientSpec(
            azure_endpoint=f"{parts.scheme}://{parts.netloc}",
            azure_deployment=azure["deployment"],
            api_version=dict(parse_qsl(parts.query)).get("api-version"),
            is_async=is_async,
        )
    return ClientSpec(base_url=f"{parts.scheme}://{parts.netloc}{parts.path[:endpoint_start]}", is_async=is_async)


def _split_arguments(function: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``function``; keys it does not take go to ``extra_body``."""
    accepted = inspect.signature(function).parameters
    kwargs = {key: value for key, value in arguments.items() if key in accepted}
    extra = {key: value for key, value in arguments.items() if key not in accepted}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _resolve(root: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        root = getattr(root, name)
    return root


# Built once, only to read method signatures from (async methods take the same arguments).
_SIGNATURE_CLIENT = openai.OpenAI(api_key=API_KEY, base_url="http://signatures.invalid/v1")


def plan_call(interaction: Interaction) -> CallPlan | None:
    """The call that made ``interaction``, or None for traffic the ``openai`` client did not send."""
    if "x-stainless-lang" not in interaction.headers:
        return None  # not sent by a Stainless SDK (e.g. a test downloading an image)
    path = urlsplit(interaction.uri).path
    for endpoint in ENDPOINTS:
        found = endpoint.pattern.search(path)
        if found is None or endpoint.http_method != interaction.method:
            continue
        method = endpoint.method
        helper = interaction.headers.get("x-stainless-helper-method")
        stream_helper = interaction.headers.get("x-stainless-stream-helper")
        if helper is not None:
            method = HELPER_METHODS[helper]
        elif stream_helper is not None:
            method = STREAM_HELPERS[stream_helper]
        arguments: dict[str, Any] = {}
        if interaction.method == "GET":
            arguments.update(parse_qsl(urlsplit(interaction.uri).query))
        elif isinstance(interaction.body, dict):
            arguments.update(interaction.body)
        if method in ("parse", "stream"):
            arguments.pop("stream", None)  # the helper sets it itself
        function = getattr(_resolve(_SIGNATURE_CLIENT, endpoint.resource), method)
        kwargs = {**found.groupdict(), **_split_arguments(function, arguments)}
        return CallPlan(
            interaction=interaction,
            client=_client_spec(interaction, found.start()),
            endpoint=endpoint,
            method=method,
            raw_response=interaction.headers.get("x-stainless-raw-response") == "true",
            kwargs=kwargs,
        )
    return None


# --- Running the call ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the caller observed: a comparable value, or the exception raised."""

    value: Any = None
    error: BaseException | None = None

    @property
    def comparable(self) -> Any:
        if self.error is not None:
            return ("raised", _describe_error(self.error))
        return ("returned", self.value)


def _describe_error(error: BaseException) -> tuple[Any, ...]:
    if isinstance(error, openai.APIStatusError):
        return (type(error).__name__, error.status_code, error.body)
    return (type(error).__name__, str(error))


def _dump(value: Any) -> Any:
    """A plain, comparable form of what the SDK returned."""
    # __class__, not type(): what isinstance() sees, also through a transparent proxy.
    if hasattr(value, "model_dump"):
        return (value.__class__.__name__, value.model_dump(mode="json", warnings=False))
    return (value.__class__.__name__, value)


def _dump_raw(response: Any) -> Any:
    return {
        "class": response.__class__.__name__,
        "status": response.status_code,
        "content": response.content,
        "parsed": _dump(response.parse()),
    }


def _bound_method(plan: CallPlan, client: Any) -> Callable[..., Any]:
    resource = _resolve(client, plan.endpoint.resource)
    if plan.raw_response:
        resource = resource.with_raw_response
    return getattr(resource, plan.method)


def run_sync(plan: CallPlan, client: Any) -> Any:
    function = _bound_method(plan, client)
    if plan.method == "stream":
        with function(**plan.kwargs) as stream:
            return ("stream", stream.__class__.__name__, [_dump(event) for event in stream])
    result = function(**plan.kwargs)
    if plan.raw_response:
        return _dump_raw(result)
    if plan.streams:
        with result as stream:
            return ("stream", stream.__class__.__name__, [_dump(chunk) for chunk in stream])
    return _dump(result)


async def run_async(plan: CallPlan, client: Any) -> Any:
    function = _bound_method(plan, client)
    if plan.method == "stream":
        async with function(**plan.kwargs) as stream:
            return ("stream", stream.__class__.__name__, [_dump(event) async for event in stream])
    result = await function(**plan.kwargs)
    if plan.raw_response:
        return _dump_raw(result)
    if plan.streams:
        async with result as stream:
            return ("stream", stream.__class__.__name__, [_dump(chunk) async for chunk in stream])
    return _dump(result)


@dataclass(frozen=True)
class ReplayedCall:
    """One recorded interaction and what happened when its call was replayed."""

    interaction: Interaction
    plan: CallPlan | None  # None: the openai client did not send this request; not replayed
    outcome: Outcome | None = None
    answered_by: int | None = None  # index of the interaction whose response was played
    observed: Any = None  # what the ``observe`` callback returned right after the call
    # The request carried INSTRUMENTATION_ADDED_STREAM_KEYS that the recording lacks.
    stream_usage_added: bool = False


@dataclass(frozen=True)
class CassetteReplay:
    calls: list[ReplayedCall]
    unplayed: list[int]  # recorded interactions no call consumed


class ReplaySession:
    """Replays cassettes through real ``openai`` clients (vcrpy, record mode ``none``).

    Interactions are replayed in recorded order, each call on a client like the one that made
    it; async calls share one event loop per cassette.
    """

    def __init__(self) -> None:
        self._tolerated: list[str] = []
        self._config = vcr_config(self._tolerated)
        self._clients: dict[ClientSpec, Any] = {}

    def replay_cassette(self, path: Path, observe: Callable[[], Any] = lambda: None) -> CassetteReplay:
        """Replay every interaction of the cassette at ``path``; ``observe`` runs after each call."""
        name = str(path.relative_to(CASSETTE_ROOT)) if path.is_relative_to(CASSETTE_ROOT) else path.name
        calls = []
        with self._config.use_cassette(str(path)) as cassette, asyncio.Runner() as runner:
            try:
                for interaction in interactions_of(cassette, name):
                    plan = plan_call(interaction)
                    if plan is None:
                        calls.append(ReplayedCall(interaction, None))
                        continue
                    before = dict(cassette.play_counts)
                    self._tolerated.clear()
                    outcome = self._run(plan, runner)
                    answered_by = _played_index(cassette, before)
                    calls.append(
                        ReplayedCall(interaction, plan, outcome, answered_by, observe(), bool(self._tolerated))
                    )
            finally:
                self._close_clients(runner)
            replayed = {call.interaction.index for call in calls if call.plan is not None}
            unplayed = [index for index in replayed if cassette.play_counts[index] == 0]
        return CassetteReplay(calls, sorted(unplayed))

    def _client(self, spec: ClientSpec) -> Any:
        if spec not in self._clients:
            self._clients[spec] = spec.build()
        return self._clients[spec]

    def _close_clients(self, runner: asyncio.Runner) -> None:
        for client in self._clients.values():
            if isinstance(client, openai.AsyncOpenAI):
                runner.run(client.close())
            else:
                client.close()
        self._clients.clear()

    def _run(self, plan: CallPlan, runner: asyncio.Runner) -> Outcome:
        client = self._client(plan.client)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the Assistants API
            try:
                if plan.client.is_async:
                    return Outcome(value=runner.run(run_async(plan, client)))
                return Outcome(value=run_sync(plan, client))
            except Exception as error:  # the caller's outcome, compared like a return value
                return Outcome(error=error)


def _played_index(cassette: Cassette, before: dict[int, int]) -> int | None:
    """The interaction a call was answered with: the one whose play count went up."""
    grown = [index for index, count in cassette.play_counts.items() if count > before.get(index, 0)]
    return grown[0] if len(grown) == 1 else None
