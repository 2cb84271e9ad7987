"""Stream proxies: the caller iterates the openai stream as before; the span ends exactly once.

A proxy forwards everything to the wrapped ``Stream``/``AsyncStream`` (``isinstance`` and
attributes included) and drives one ``finalized`` flag from every exit path: exhaustion,
an error mid-stream, ``close()``, ``with``/``async with`` exit, the SDK's stream helpers
closing the HTTP response, and garbage collection of an abandoned stream. The span is never
attached to the caller's context while the stream is open (peers leak it there).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from wrapt import ObjectProxy

from llmtel.instrumentation.invocation import Invocation

_logger = logging.getLogger("llmtel.instrumentation")


def _safe_complete(invocation: Invocation) -> None:
    try:
        if not invocation.finished:
            invocation.complete_stream()
    except Exception:  # noqa: BLE001 - instrumentation must never break the app
        _logger.debug("llmtel: openai stream finalization failed", exc_info=True)


def _safe_fail(invocation: Invocation, error: BaseException) -> None:
    try:
        invocation.fail(error)
    except Exception:  # noqa: BLE001
        _logger.debug("llmtel: openai stream failure handling failed", exc_info=True)


class _ResponseCloseHook(ObjectProxy):  # type: ignore[misc]
    """The stream's HTTP response; closing it (as the SDK's ``.stream()`` helpers do) ends the span."""

    def __init__(self, response: Any, invocation: Invocation) -> None:
        super().__init__(response)
        self._self_invocation = invocation

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            _safe_complete(self._self_invocation)

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            _safe_complete(self._self_invocation)


# Once asked for usage, the API puts `"usage":null` on every chunk (compact JSON; the spaced form
# is what json.dumps writes, as some proxies re-serialise). A JSON string escapes its quotes, so
# the unescaped pattern can only be the field itself.
_USAGE_NULL = b',"usage":null'
_USAGE_NULL_SPACED = b', "usage": null'


def _usage_null_form(data: bytes) -> bytes:
    """The form this stream writes the field in, from its first bytes (one replace per read after)."""
    return _USAGE_NULL_SPACED if _USAGE_NULL not in data and _USAGE_NULL_SPACED in data else _USAGE_NULL


def _without_usage_nulls(reads: Iterator[bytes]) -> Iterator[bytes]:
    # Split after the last newline of each read: a field cut between two reads is never missed.
    carry = b""
    form = None
    for data in reads:
        if carry:
            data = carry + data
        end = data.rfind(b"\n") + 1
        carry = data[end:]
        if end:
            if form is None:
                form = _usage_null_form(data)
            yield data[:end].replace(form, b"")
    if carry:
        yield carry.replace(form or _usage_null_form(carry), b"")


async def _awithout_usage_nulls(reads: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    carry = b""
    form = None
    async for data in reads:
        if carry:
            data = carry + data
        end = data.rfind(b"\n") + 1
        carry = data[end:]
        if end:
            if form is None:
                form = _usage_null_form(data)
            yield data[:end].replace(form, b"")
    if carry:
        yield carry.replace(form or _usage_null_form(carry), b"")


class _UsageNullDropper:
    """The stream's SSE decoder, fed the response bytes without the `"usage":null` fields.

    They exist only because we asked for usage; the SDK turning each into a model field costs
    ~2,700 instructions a chunk, more than llmtel's own handling of the chunk (bench/overhead.py).
    Without them the caller's chunks are exactly those of the call it made.
    """

    __slots__ = ("_decoder",)

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder

    def iter_bytes(self, iterator: Iterator[bytes]) -> Any:
        return self._decoder.iter_bytes(_without_usage_nulls(iterator))

    def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> Any:
        return self._decoder.aiter_bytes(_awithout_usage_nulls(iterator))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)


def _drop_usage_nulls(stream: Any, invocation: Invocation) -> None:
    """When we asked for usage, decode the stream without the `"usage":null` it brings (not yet started)."""
    if not invocation.hide_usage:
        return
    try:
        decoder = getattr(stream, "_decoder", None)
        if decoder is not None and hasattr(decoder, "iter_bytes") and not isinstance(decoder, _UsageNullDropper):
            stream._decoder = _UsageNullDropper(decoder)
            # The chunks arrive without the field: nothing to take out of their fields-set.
            invocation.stream_state.unset_usage = False
    except Exception:  # noqa: BLE001 - the SDK then reads the fields itself; on_chunk hides them
        _logger.debug("llmtel: could not wrap the stream decoder", exc_info=True)


def _observed(invocation: Invocation, chunks: Iterator[Any], owner: Any) -> Iterator[Any]:
    """The chunks the caller sees, each handed to the stream state on its way.

    A generator, so that the caller's ``for`` loop resumes it directly: per chunk this adds the
    state's handling and nothing else (no proxy method frame in between). ``owner``, the proxy,
    stays referenced by this frame: ``for chunk in client...create(stream=True)`` keeps only the
    iterator, and the proxy must not be collected (and end the span) while it runs.
    """
    on_chunk = invocation.stream_state.on_chunk
    try:
        for chunk in chunks:
            try:
                if invocation.first_chunk_at is None:
                    invocation.on_first_chunk()
                if on_chunk(chunk):
                    continue  # ours to hide: the usage-only chunk we asked for
            except Exception:  # noqa: BLE001 - instrumentation must never break the app
                _logger.debug("llmtel: openai stream chunk handling failed", exc_info=True)
            yield chunk
    except GeneratorExit:  # closed, or collected unfinished: the stream was abandoned
        _safe_complete(invocation)
        raise
    except BaseException as error:
        _safe_fail(invocation, error)
        raise
    _safe_complete(invocation)


class SyncStreamProxy(ObjectProxy):  # type: ignore[misc]
    def __init__(self, stream: Any, invocation: Invocation) -> None:
        super().__init__(stream)
        self._self_invocation = invocation
        _drop_usage_nulls(stream, invocation)
        # The stream's own generator when it has one (openai's Stream keeps it in `_iterator`):
        # iterating it directly skips Stream.__next__, a Python frame per chunk.
        self._self_chunks = _observed(invocation, getattr(stream, "_iterator", None) or iter(stream), self)

    def __iter__(self) -> Iterator[Any]:
        return self._self_chunks

    def __next__(self) -> Any:
        return next(self._self_chunks)

    def __enter__(self) -> SyncStreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            _safe_complete(self._self_invocation)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            _safe_complete(self._self_invocation)

    @property
    def response(self) -> Any:
        return _ResponseCloseHook(self.__wrapped__.response, self._self_invocation)

    def __del__(self) -> None:
        invocation = getattr(self, "_self_invocation", None)
        if invocation is not None and not invocation.finished:
            _safe_complete(invocation)


class AsyncStreamProxy(ObjectProxy):  # type: ignore[misc]
    def __init__(self, stream: Any, invocation: Invocation) -> None:
        super().__init__(stream)
        self._self_invocation = invocation
        _drop_usage_nulls(stream, invocation)
        self._self_on_chunk = invocation.stream_state.on_chunk
        self._self_first = True

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                chunk = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                _safe_complete(self._self_invocation)
                raise
            except BaseException as error:
                _safe_fail(self._self_invocation, error)
                raise
            try:
                if self._self_first:
                    self._self_first = False
                    self._self_invocation.on_first_chunk()
                if not self._self_on_chunk(chunk):
                    return chunk
            except Exception:  # noqa: BLE001
                _logger.debug("llmtel: openai stream chunk handling failed", exc_info=True)
                return chunk

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            _safe_complete(self._self_invocation)

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            _safe_complete(self._self_invocation)

    @property
    def response(self) -> Any:
        return _ResponseCloseHook(self.__wrapped__.response, self._self_invocation)

    def __del__(self) -> None:
        invocation = getattr(self, "_self_invocation", None)
        if invocation is not None and not invocation.finished:
            _safe_complete(invocation)
