"""``workflow``, ``agent``, ``tool`` and ``context``: one request reads as one span tree.

Each is a decorator (sync and async functions, generators, async generators, methods) and a
context manager (``with`` / ``async with``)::

    from llmtel.instrumentation import agent, context, tool, workflow

    @tool(description="Look up an order")
    def lookup_order(order_id: str) -> dict: ...

    @agent("triage")
    def triage(question: str) -> str: ...          # LLM calls inside are children

    with context(user_id="u-42", session_id="s-1", tags=["beta"]):
        with workflow("support-request"):
            triage("where is my order?")

The tree is carried by the OpenTelemetry context, so it holds wherever the context goes:
asyncio tasks copy it, and thread pools get it from ``opentelemetry-instrumentation-threading``
(installed with the ``sdk`` extra; ``opentelemetry-instrument`` loads it, manual setups call
``ThreadingInstrumentor().instrument()``). A decorated generator keeps the context it was
created in, however and wherever it is consumed.

``context(...)`` attributes reach every span started inside it, ours and other
instrumentations' alike: while a context is alive the global tracer provider (or the one given
to the instrumentor) sets them as spans start, and spans started when none is alive pay nothing
for it; see ``processors``, and call ``processors.add_context_processor`` yourself for other
providers you build.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY

from llmtel import __version__
from llmtel.instrumentation import semconv as sc
from llmtel.instrumentation.settings import Settings, read_settings

F = TypeVar("F", bound=Callable[..., Any])

# The innermost agent or workflow scope, and the merged context() attributes.
SCOPE_KEY = otel_context.create_key("llmtel-scope")
CONTEXT_ATTRIBUTES_KEY = otel_context.create_key("llmtel-context-attributes")


_ENTRIES: ContextVar[tuple[tuple[Any, Any, Any], ...]] = ContextVar("llmtel-scope-entries", default=())


def _runtime_context_functions() -> tuple[Callable[[], Context], Callable[[Context], Any], Callable[[Any], None]]:
    """``get_current``, ``attach`` and ``detach`` of the OpenTelemetry context.

    With the default runtime context (a ContextVar), straight on that variable: each public
    function is two Python calls deep, and a ``with context(...)`` makes four of them. Any other
    runtime (``OTEL_PYTHON_CONTEXT``) goes through the public functions.
    """
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ != "ContextVarsRuntimeContext" or not isinstance(variable, ContextVar):
        return otel_context.get_current, otel_context.attach, otel_context.detach

    reset = variable.reset

    def detach(token: Any) -> None:
        try:
            reset(token)
        except Exception:  # a token of another context: OpenTelemetry's detach logs it, as always
            otel_context.detach(token)

    return variable.get, variable.set, detach


_get_current, _attach, _detach = _runtime_context_functions()
# The variable's own reset, for the hottest caller (``context.__exit__``: one Python frame fewer
# than ``_detach``); None with another runtime context.
_reset: Callable[[Any], None] | None = getattr(_get_current, "__self__", None) and _get_current.__self__.reset


class _Configured:
    """Tracer and settings for the API, set by the instrumentor (its tracer provider, its settings).

    Without an instrumentor: the global tracer provider and the environment's settings.
    """

    tracer: trace.Tracer = trace.get_tracer("llmtel.instrumentation", __version__)
    settings: Settings | None = None
    tracer_provider: Any = None
    step_in: Callable[[Any], None] | None = None  # processors.step_in, imported on first use


def configure(tracer: trace.Tracer | None, settings: Settings | None, tracer_provider: Any = None) -> None:
    """Called by the instrumentor on instrument() and (with Nones) on uninstrument()."""
    _Configured.tracer = tracer or trace.get_tracer("llmtel.instrumentation", __version__)
    _Configured.settings = settings
    _Configured.tracer_provider = tracer_provider
    ContextSpans.installed = False  # the next context() gives the (new) provider its processor


class ContextSpans:
    """Which ``context(...)`` attributes are alive, and whether the span paths read them.

    ``live`` holds a weak reference to each ``_ContextAttributes`` alive, which takes itself out
    when its dict is freed (the callback is the list's own ``remove``: no Python code runs);
    ``installed`` is True while the providers' ContextSpanProcessor is in their span paths (see
    ``processors``). List appends and removes are atomic, so no lock is needed for them.
    """

    installed = False
    live: list[weakref.ref] = []


class _ContextAttributes(dict):
    """The merged attributes of one ``context(...)`` entry, as the OpenTelemetry context carries them.

    Alive as long as some context holding them is: the ``with`` block, and any task, thread or
    generator that copied it (a reference cycle keeps it until the garbage collector runs). While
    one is alive spans read them; when the last one is freed the next span started outside every
    context takes the processor out of the span path.
    """

    __slots__ = ("__weakref__",)


_live_append = ContextSpans.live.append
_live_remove = ContextSpans.live.remove


def _step_in() -> None:
    """Put the ContextSpanProcessor back in the span paths (a context was entered while it was out)."""
    provider = _Configured.tracer_provider or trace.get_tracer_provider()
    step_in = _Configured.step_in
    if step_in is None:
        try:
            from llmtel.instrumentation.processors import step_in
        except ImportError:  # the API without the SDK: no span path to join
            ContextSpans.installed = True
            return
        _Configured.step_in = step_in
    step_in(provider)


def _tracer() -> trace.Tracer:
    return _Configured.tracer


def _settings() -> Settings:
    settings = _Configured.settings
    if settings is None:
        settings = _Configured.settings = read_settings()
    return settings


# ---------------------------------------------------------------------------------------
# Scope state: what an agent or workflow accumulates from the calls below it.


class ScopeState:
    """Counts, tokens and cost of the LLM and tool calls under one agent or workflow span.

    Also the tool calls the LLM asked for and no tool has answered yet, so a ``tool`` run
    inside the same scope can carry the matching ``gen_ai.tool.call.id``.
    """

    __slots__ = ("llm_calls", "tool_calls", "input_tokens", "output_tokens", "cost", "pending", "agent_name")

    # One lock for all scopes: updates are a few additions, and a lock per scope would cost
    # every agent and workflow span an allocation.
    lock = threading.Lock()

    def __init__(self, agent_name: str | None = None) -> None:
        # The innermost agent around this scope: LLM and tool spans below it carry its name, so
        # a store can group calls by agent from each span alone (the LLM views read it there).
        self.agent_name = agent_name
        self.llm_calls = 0
        self.tool_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.pending: dict[str, deque[str]] | None = None

    def add_llm_call(self, input_tokens: int | None, output_tokens: int | None, cost: float | None,
                     requested_tools: Iterable[tuple[str, str]] = ()) -> None:
        with self.lock:
            self.llm_calls += 1
            if input_tokens:
                self.input_tokens += input_tokens
            if output_tokens:
                self.output_tokens += output_tokens
            if cost:
                self.cost += cost
            for call_id, name in requested_tools:
                if call_id and name:
                    if self.pending is None:
                        self.pending = {}
                    self.pending.setdefault(name, deque()).append(call_id)

    def take_call_id(self, name: str) -> str | None:
        with self.lock:
            self.tool_calls += 1
            waiting = self.pending.get(name) if self.pending else None
            return waiting.popleft() if waiting else None

    def add_child(self, child: ScopeState) -> None:
        with self.lock:
            self.llm_calls += child.llm_calls
            self.tool_calls += child.tool_calls
            self.input_tokens += child.input_tokens
            self.output_tokens += child.output_tokens
            self.cost += child.cost

    def attributes(self, names: tuple[str, str, str, str, str]) -> dict[str, Any]:
        """The totals under ``names``: (llm_calls, tool_calls, input_tokens, output_tokens, cost)."""
        attrs: dict[str, Any] = {
            names[0]: self.llm_calls,
            names[1]: self.tool_calls,
            names[2]: self.input_tokens,
            names[3]: self.output_tokens,
        }
        if self.cost:
            attrs[names[4]] = round(self.cost, 10)
        return attrs


def _total_names(prefix: str) -> tuple[str, str, str, str, str]:
    return tuple(prefix + name for name in ("llm_calls", "tool_calls", "input_tokens", "output_tokens", "cost"))  # type: ignore[return-value]


def current_scope() -> ScopeState | None:
    return otel_context.get_value(SCOPE_KEY)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# Scopes: what entering and leaving each kind does. One ``Scope`` object serves as decorator
# and as context manager; entering returns a token that leaving takes back.


class _Scope:
    """Base: a decorator and context manager around ``_enter``/``_exit``."""

    def _enter(self, parent: otel_context.Context | None, call: tuple[tuple, dict] | None) -> Any:
        """Start the scope; returns a tuple whose first item is the context to run in."""
        raise NotImplementedError

    def _exit(self, entered: Any, error: BaseException | None, result: Any = None) -> None:
        raise NotImplementedError

    # -- context manager --------------------------------------------------------------

    _entry: tuple[Any, Any] | None = None

    def __enter__(self) -> Any:
        entered = self._enter(None, None)
        token = _attach(entered[0])
        if self._entry is None:  # the usual case: one `with` at a time on this object
            self._entry = (entered, token)
        else:
            # Entered again while entered (recursion, threads, concurrent asyncio tasks): a
            # stack per thread and task (a ContextVar) keeps each entry with its own context.
            _ENTRIES.set((*_ENTRIES.get(), (self, entered, token)))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        entry = self._entry
        if entry is not None and _get_current() is entry[0][0]:
            self._entry = None
        else:
            entry = self._pop_entry()
        entered, token = entry
        _detach(token)
        self._exit(entered, exc)

    def _pop_entry(self) -> tuple[Any, Any]:
        stack = _ENTRIES.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] is self:
                _ENTRIES.set(stack[:index] + stack[index + 1:])
                return stack[index][1], stack[index][2]
        # Not on this task's stack: the context was changed under us and not restored; end
        # the entry we have rather than fail the caller's `with`.
        entry = self._entry
        self._entry = None
        return entry  # type: ignore[return-value]

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator --------------------------------------------------------------------

    def _bind(self, function: Callable[..., Any]) -> None:
        """Hook for scopes that take defaults from the decorated function."""

    def __call__(self, function: F) -> F:
        self._bind(function)
        scope = self
        if inspect.isasyncgenfunction(function):

            @functools.wraps(function)
            def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                return _run_async_generator(scope, function, args, kwargs, _get_current())

            return async_gen_wrapper  # type: ignore[return-value]
        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                return _run_generator(scope, function, args, kwargs, _get_current())

            return gen_wrapper  # type: ignore[return-value]
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                entered = scope._enter(None, (args, kwargs))
                token = _attach(entered[0])
                try:
                    result = await function(*args, **kwargs)
                except BaseException as error:
                    _detach(token)
                    scope._exit(entered, error)
                    raise
                _detach(token)
                scope._exit(entered, None, result)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            entered = scope._enter(None, (args, kwargs))
            token = _attach(entered[0])
            try:
                result = function(*args, **kwargs)
            except BaseException as error:
                _detach(token)
                scope._exit(entered, error)
                raise
            _detach(token)
            scope._exit(entered, None, result)
            return result

        return wrapper  # type: ignore[return-value]


def _run_generator(scope: _Scope, function: Callable[..., Any], args: tuple, kwargs: dict,
                   parent: otel_context.Context) -> Any:
    """Drive a generator with its scope's context attached for each step, wherever it is consumed."""
    entered = scope._enter(parent, (args, kwargs))
    ctx = entered[0]
    token = _attach(ctx)
    try:
        generator = function(*args, **kwargs)
    except BaseException as error:
        _detach(token)
        scope._exit(entered, error)
        raise
    _detach(token)
    return _ScopedGenerator(scope, entered, ctx, generator)


class _ScopedGenerator:
    """A generator proxy: each step runs in the scope's context; the scope ends with the generator."""

    __slots__ = ("_scope", "_entered", "_ctx", "_generator", "_done")

    def __init__(self, scope: _Scope, entered: Any, ctx: otel_context.Context, generator: Any) -> None:
        self._scope, self._entered, self._ctx, self._generator = scope, entered, ctx, generator
        self._done = False

    def __iter__(self) -> _ScopedGenerator:
        return self

    def __next__(self) -> Any:
        return self._step(self._generator.send, None)

    def send(self, value: Any) -> Any:
        return self._step(self._generator.send, value)

    def throw(self, *args: Any) -> Any:
        return self._step(self._generator.throw, *args)

    def close(self) -> None:
        if self._done:
            return
        token = _attach(self._ctx)
        try:
            self._generator.close()
        finally:
            _detach(token)
            self._finish(None)

    def _step(self, method: Callable[..., Any], *args: Any) -> Any:
        token = _attach(self._ctx)
        try:
            return method(*args)
        except StopIteration as stop:
            self._finish(None, stop.value)
            raise
        except BaseException as error:
            self._finish(error)
            raise
        finally:
            _detach(token)

    def _finish(self, error: BaseException | None, result: Any = None) -> None:
        if not self._done:
            self._done = True
            self._scope._exit(self._entered, error, result)

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._finish(None)


def _run_async_generator(scope: _Scope, function: Callable[..., Any], args: tuple, kwargs: dict,
                         parent: otel_context.Context) -> Any:
    entered = scope._enter(parent, (args, kwargs))
    ctx = entered[0]
    token = _attach(ctx)
    try:
        generator = function(*args, **kwargs)
    except BaseException as error:
        _detach(token)
        scope._exit(entered, error)
        raise
    _detach(token)
    return _ScopedAsyncGenerator(scope, entered, ctx, generator)


class _ScopedAsyncGenerator:
    __slots__ = ("_scope", "_entered", "_ctx", "_generator", "_done")

    def __init__(self, scope: _Scope, entered: Any, ctx: otel_context.Context, generator: Any) -> None:
        self._scope, self._entered, self._ctx, self._generator = scope, entered, ctx, generator
        self._done = False

    def __aiter__(self) -> _ScopedAsyncGenerator:
        return self

    async def __anext__(self) -> Any:
        return await self._step(self._generator.asend, None)

    async def asend(self, value: Any) -> Any:
        return await self._step(self._generator.asend, value)

    async def athrow(self, *args: Any) -> Any:
        return await self._step(self._generator.athrow, *args)

    async def aclose(self) -> None:
        if self._done:
            return
        token = _attach(self._ctx)
        try:
            await self._generator.aclose()
        finally:
            _detach(token)
            self._finish(None)

    async def _step(self, method: Callable[..., Any], *args: Any) -> Any:
        # The awaitable runs inside this coroutine, so the attach/detach pair stays in one task.
        token = _attach(self._ctx)
        try:
            return await method(*args)
        except StopAsyncIteration:
            self._finish(None)
            raise
        except BaseException as error:
            self._finish(error)
            raise
        finally:
            _detach(token)

    def _finish(self, error: BaseException | None) -> None:
        if not self._done:
            self._done = True
            self._scope._exit(self._entered, error)

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._finish(None)


# ---------------------------------------------------------------------------------------
# Span scopes: workflow, agent, tool


def _end_span(span: Any, error: BaseException | None, attrs: dict[str, Any] | None = None) -> None:
    if attrs:
        span.set_attributes(attrs)
    if error is not None and not isinstance(error, GeneratorExit):
        span.set_attribute(sc.ERROR_TYPE, type(error).__qualname__)
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)[:1000] or type(error).__qualname__))
    span.end()


class _SummaryScope(_Scope):
    """Workflow and agent: a span that sums the LLM and tool calls below it."""

    _totals: tuple[str, str, str, str, str] = _total_names("llmtel.scope.")

    def __init__(self, name: str, span_name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self._span_name = span_name
        self._attributes = attributes

    def _enter(self, parent: otel_context.Context | None, call: Any) -> Any:
        if parent is None:
            parent = _get_current()
        span = _Configured.tracer.start_span(self._span_name, context=parent, kind=SpanKind.INTERNAL,
                                             attributes=self._attributes)
        outer = parent.get(SCOPE_KEY)
        state = ScopeState(self._agent_name(outer))
        ctx = Context({**parent, _SPAN_KEY: span, SCOPE_KEY: state})
        return ctx, span, state, outer

    def _agent_name(self, outer: ScopeState | None) -> str | None:
        return outer.agent_name if outer is not None else None

    def _exit(self, entered: Any, error: BaseException | None, result: Any = None) -> None:
        _, span, state, outer = entered
        if outer is not None:
            outer.add_child(state)
        _end_span(span, error, state.attributes(self._totals))


class workflow(_SummaryScope):  # noqa: N801 - reads as a keyword: `with workflow("name"):`
    """A request or job: ``invoke_workflow {name}``, the root of a tree when no span is active."""

    _totals = _total_names("llmtel.workflow.")

    def __init__(self, name: str) -> None:
        super().__init__(name, f"invoke_workflow {name}", {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_WORKFLOW,
            sc.GEN_AI_WORKFLOW_NAME: name,
        })


class agent(_SummaryScope):  # noqa: N801
    """An agent run: ``invoke_agent {name}`` with ``gen_ai.agent.*`` and ``llmtel.agent.*`` totals."""

    _totals = _total_names("llmtel.agent.")

    def __init__(self, name: str, *, id: str | None = None, description: str | None = None) -> None:  # noqa: A002
        attributes: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.GEN_AI_AGENT_NAME: name}
        if id is not None:
            attributes[sc.GEN_AI_AGENT_ID] = id
        if description is not None:
            attributes[sc.GEN_AI_AGENT_DESCRIPTION] = description
        super().__init__(name, f"invoke_agent {name}", attributes)

    def _agent_name(self, outer: ScopeState | None) -> str | None:
        return self.name


class tool(_Scope):  # noqa: N801
    """A tool (function) execution: ``execute_tool {name}``.

    ``name`` defaults to the decorated function's name, which is what the LLM asks for. The
    arguments and the result are recorded only under content capture.
    """

    def __init__(self, name: str | Callable[..., Any] | None = None, *, description: str | None = None,
                 type: str = "function") -> None:  # noqa: A002
        self._function: Callable[..., Any] | None = None
        self.name = name  # type: ignore[assignment]
        self._description = description
        self._type = type
        self._attributes: dict[str, Any] = {}
        self._signature: inspect.Signature | None = None
        if name is not None:
            self._set_name(name)

    def _set_name(self, name: str) -> None:
        self.name = name
        self._span_name = f"execute_tool {name}"
        self._attributes = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
            sc.GEN_AI_TOOL_NAME: name,
            sc.GEN_AI_TOOL_TYPE: self._type,
        }
        if self._description is not None:
            self._attributes[sc.GEN_AI_TOOL_DESCRIPTION] = self._description

    def _bind(self, function: Callable[..., Any]) -> None:
        self._function = function
        if self.name is None:
            self._set_name(function.__name__)
        if self._description is None and function.__doc__:
            self._description = inspect.cleandoc(function.__doc__).split("\n\n")[0]
            self._attributes[sc.GEN_AI_TOOL_DESCRIPTION] = self._description

    def __new__(cls, name: Any = None, **kwargs: Any) -> Any:
        if callable(name) and not isinstance(name, str):  # bare `@tool`: return the wrapped function
            instance = super().__new__(cls)
            instance.__init__(None, **kwargs)
            return instance(name)
        return super().__new__(cls)

    def _enter(self, parent: otel_context.Context | None, call: Any) -> Any:
        if self.name is None:
            raise TypeError("tool() used as a context manager needs a name")
        if parent is None:
            parent = _get_current()
        attributes = self._attributes
        scope = parent.get(SCOPE_KEY)
        if scope is not None:
            call_id = scope.take_call_id(self.name)
            if call_id is not None or scope.agent_name:
                attributes = attributes.copy()
                if call_id is not None:
                    attributes[sc.GEN_AI_TOOL_CALL_ID] = call_id
                if scope.agent_name:
                    attributes[sc.GEN_AI_AGENT_NAME] = scope.agent_name
        settings = _settings()
        if call is not None and settings.capture_content:
            arguments = self._arguments_json(call, settings.content_max_length)
            if arguments is not None:
                attributes = {**attributes, sc.GEN_AI_TOOL_CALL_ARGUMENTS: arguments}
        span = _Configured.tracer.start_span(self._span_name, context=parent, kind=SpanKind.INTERNAL,
                                             attributes=attributes)
        return Context({**parent, _SPAN_KEY: span}), span, settings

    def _arguments_json(self, call: tuple[tuple, dict], limit: int) -> str | None:
        args, kwargs = call
        if self._function is None:
            return None
        try:
            if self._signature is None:
                self._signature = inspect.signature(self._function)
            bound = self._signature.bind_partial(*args, **kwargs).arguments
            bound.pop("self", None)
            bound.pop("cls", None)
            return _truncate(json.dumps(bound, ensure_ascii=False, default=str), limit)
        except (TypeError, ValueError):
            return None

    def _exit(self, entered: Any, error: BaseException | None, result: Any = None) -> None:
        _, span, settings = entered
        attrs = None
        if error is None and settings.capture_content and result is not None:
            try:
                text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
                attrs = {sc.GEN_AI_TOOL_CALL_RESULT: _truncate(text, settings.content_max_length)}
            except (TypeError, ValueError):
                attrs = None
        _end_span(span, error, attrs)


def _truncate(text: str, limit: int) -> str:
    from llmtel.instrumentation.content import truncate

    return truncate(text, limit)


# ---------------------------------------------------------------------------------------
# context(): attributes for every span started inside


def _hash_user_id(user_id: str, salt: str) -> str:
    return hashlib.sha256((salt + user_id).encode()).hexdigest()


class context(_Scope):  # noqa: N801
    """Attributes for every span started inside: ``user.id``, ``session.id``, ``gen_ai.conversation.id``,
    ``llmtel.tags`` and ``llmtel.metadata.<key>``. Nested contexts merge; the inner value wins.

    With ``OTEL_INSTRUMENTATION_LLMTEL_HASH_USER_ID=true`` the user id is stored as the salted
    SHA-256 of itself (salt from ``OTEL_INSTRUMENTATION_LLMTEL_USER_ID_SALT``).
    """

    def __init__(self, user_id: str | None = None, session_id: str | None = None,
                 conversation_id: str | None = None, tags: Iterable[str] = (),
                 metadata: Mapping[str, Any] | None = None) -> None:
        attrs: dict[str, Any] = {}
        if user_id is not None:
            settings = _Configured.settings or _settings()
            user_id = user_id if type(user_id) is str else str(user_id)
            attrs[sc.USER_ID] = _hash_user_id(user_id, settings.user_id_salt) if settings.hash_user_id else user_id
        if session_id is not None:
            attrs[sc.SESSION_ID] = session_id if type(session_id) is str else str(session_id)
        if conversation_id is not None:
            attrs[sc.GEN_AI_CONVERSATION_ID] = str(conversation_id)
        self._tags = tuple(map(str, tags)) if tags else ()
        if metadata:
            for key, value in metadata.items():
                attrs[sc.LLMTEL_METADATA_PREFIX + str(key)] = (
                    value if isinstance(value, (str, bool, int, float)) else json.dumps(value, default=str)
                )
        self._attributes = attrs
        # What an entry outside any other context carries.
        self._alone = {**attrs, sc.LLMTEL_TAGS: self._tags} if self._tags else attrs

    def _context_under(self, parent: Context) -> Context:
        outer = parent.get(CONTEXT_ATTRIBUTES_KEY)
        if outer:
            merged = _ContextAttributes(outer)
            merged.update(self._attributes)
            if self._tags:
                known = outer.get(sc.LLMTEL_TAGS, ())
                merged[sc.LLMTEL_TAGS] = known + tuple(t for t in self._tags if t not in known)
        else:
            merged = _ContextAttributes(self._alone)
        _live_append(weakref.ref(merged, _live_remove))
        if not ContextSpans.installed:
            _step_in()
        return Context({**parent, CONTEXT_ATTRIBUTES_KEY: merged})

    def _enter(self, parent: otel_context.Context | None, call: Any) -> Any:
        return (self._context_under(_get_current() if parent is None else parent),)

    # ``with context(...)``: the base class's entry and exit without the scope machinery a
    # context does not need (no span, nothing to do on exit); entries are kept as (context, token).

    def __enter__(self) -> Any:
        parent = _get_current()
        if CONTEXT_ATTRIBUTES_KEY in parent:
            ctx = self._context_under(parent)
        else:  # the usual case, inline: _context_under without an outer context
            merged = _ContextAttributes(self._alone)
            _live_append(weakref.ref(merged, _live_remove))
            if not ContextSpans.installed:
                _step_in()
            ctx = Context({**parent, CONTEXT_ATTRIBUTES_KEY: merged})
        token = _attach(ctx)
        if self._entry is None:
            self._entry = (ctx, token)
        else:
            _ENTRIES.set((*_ENTRIES.get(), (self, ctx, token)))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        entry = self._entry
        if entry is not None and _get_current() is entry[0]:
            self._entry = None
        else:
            entry = self._pop_entry()
        if _reset is None:
            _detach(entry[1])
            return
        try:
            _reset(entry[1])
        except Exception:  # a token of another context: OpenTelemetry's detach logs it, as always
            otel_context.detach(entry[1])

    def _exit(self, entered: Any, error: BaseException | None, result: Any = None) -> None:
        return None


def context_attributes(parent: otel_context.Context | None = None) -> Mapping[str, Any] | None:
    """The merged ``context(...)`` attributes in force (None outside any context)."""
    return otel_context.get_value(CONTEXT_ATTRIBUTES_KEY, parent)  # type: ignore[return-value]
