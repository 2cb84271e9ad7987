"""Pure accumulation of streamed responses: chunks in, the same attributes a whole response gives out.

One state object per stream; ``on_chunk`` runs for every chunk, so it touches only the
fields it needs and returns whether the chunk is ours to hide (the usage-only chunk that
exists only because we asked for ``include_usage``).
"""

from __future__ import annotations

from typing import Any

from llmtel.instrumentation import openai_attributes as oa
from llmtel.instrumentation import semconv as sc


class ChatStreamState:
    """``chat.completion.chunk`` (and legacy ``text_completion``) streams."""

    __slots__ = ("id", "model", "service_tier", "fingerprint", "usage", "finish", "hide_usage", "unset_usage", "texts",
                 "tools", "track_tools")

    def __init__(self, hide_usage: bool, keep_text: bool, track_tools: bool = True) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.service_tier: str | None = None
        self.fingerprint: str | None = None
        self.usage: Any = None
        self.finish: dict[int, str] = {}
        self.hide_usage = hide_usage
        # Chunks that carry "usage": null because we asked: take it out of their fields-set
        # (off when the stream's bytes reach the SDK without the field, streams._drop_usage_nulls).
        self.unset_usage = hide_usage
        # Per choice: accumulated text, and tool calls by index -> [id, name, arguments].
        self.texts: dict[int, list[str]] | None = {} if keep_text else None
        self.tools: dict[int, dict[int, list[str]]] = {}
        self.track_tools = track_tools

    def on_chunk(self, chunk: Any) -> bool:
        if not self.model:
            # The first chunk, or a later one: Azure's first chunk (prompt_filter_results) has an
            # empty id and model.
            self.id = chunk.id
            self.model = chunk.model
            self.service_tier = getattr(chunk, "service_tier", None)
            self.fingerprint = getattr(chunk, "system_fingerprint", None)
        # Every field read below goes through pydantic's attribute hook (~0.5k instructions
        # each), so a content chunk gets as few as possible: its choices and their finish reason.
        # Usage comes on a chunk without choices (OpenAI) or on the finishing one (some servers).
        choices = chunk.choices
        if not choices:
            usage = chunk.usage
            if usage is not None:
                self.usage = usage
                if self.hide_usage:
                    return True
        elif self.unset_usage:
            # We asked for usage, so every chunk carries "usage": null; without our request it
            # would not carry the field at all. Keep model_dump(exclude_unset=True) identical.
            chunk.__pydantic_fields_set__.discard("usage")
        for choice in choices:
            reason = choice.finish_reason
            if reason is not None:
                self.finish[choice.index] = reason
                usage = chunk.usage
                if usage is not None:
                    self.usage = usage
            if self.texts is not None:
                self._keep_text(choice)
            if self.track_tools:
                delta = getattr(choice, "delta", None)  # legacy completions have `text`, no delta
                if delta is not None and delta.tool_calls:
                    self._tool_deltas(choice.index, delta.tool_calls)
        return False

    def _keep_text(self, choice: Any) -> None:
        delta = getattr(choice, "delta", None)
        text = getattr(delta, "content", None) if delta is not None else getattr(choice, "text", None)
        if text:
            self.texts.setdefault(choice.index, []).append(text)  # type: ignore[union-attr]

    def _tool_deltas(self, index: int, deltas: Any) -> None:
        # Tool calls are kept even without content capture: their ids and names link the
        # model's request to the tool span that answers it.
        for call in deltas:
            calls = self.tools.setdefault(index, {})
            entry = calls.setdefault(call.index, ["", "", ""])
            if call.id:
                entry[0] = call.id
            function = call.function
            if function is not None:
                if function.name:
                    entry[1] += function.name
                if function.arguments:
                    entry[2] += function.arguments

    def attributes(self, attrs: dict[str, Any]) -> None:
        if self.id:
            attrs[sc.GEN_AI_RESPONSE_ID] = self.id
        if self.model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = self.model
        if self.finish:
            attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [self.finish[i] for i in sorted(self.finish)]
        if self.usage is not None:
            oa._usage_chat(self.usage, attrs)
        if self.service_tier:
            attrs[sc.OPENAI_RESPONSE_SERVICE_TIER] = self.service_tier
        if self.fingerprint:
            attrs[sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] = self.fingerprint

    def first_text(self) -> str | None:
        if not self.texts:
            return None
        first = min(self.texts)
        return "".join(self.texts[first])

    def choices(self) -> list[dict[str, Any]]:
        """The accumulated choices in the plain-dict form the content module takes."""
        indexes = sorted(set(self.texts or ()) | set(self.tools) | set(self.finish))
        out = []
        for index in indexes:
            calls = self.tools.get(index, {})
            out.append(
                {
                    "index": index,
                    "role": "assistant",
                    "content": "".join((self.texts or {}).get(index, ())) or None,
                    "tool_calls": [
                        {"id": c[0], "name": c[1], "arguments": c[2]} for _, c in sorted(calls.items())
                    ],
                    "finish_reason": self.finish.get(index),
                }
            )
        return out


    def tool_calls(self) -> list[tuple[str, str]]:
        return [(c[0], c[1]) for _, calls in sorted(self.tools.items()) for _, c in sorted(calls.items())]


class ResponsesStreamState:
    """Responses API event streams: the final ``response.*`` event carries the whole response."""

    __slots__ = ("response", "partial")

    def __init__(self) -> None:
        self.response: Any = None
        self.partial: Any = None

    def on_chunk(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self.response = event.response
        elif kind in ("response.created", "response.in_progress"):
            self.partial = event.response
        return False

    def attributes(self, attrs: dict[str, Any]) -> None:
        if self.response is not None:
            oa.responses_response(self.response, attrs)
        elif self.partial is not None:
            value = getattr(self.partial, "id", None)
            if value:
                attrs[sc.GEN_AI_RESPONSE_ID] = value
            value = getattr(self.partial, "model", None)
            if value:
                attrs[sc.GEN_AI_RESPONSE_MODEL] = value

    def first_text(self) -> str | None:
        return getattr(self.response, "output_text", None) if self.response is not None else None

    def tool_calls(self) -> list[tuple[str, str]]:
        return [(item.call_id, item.name) for item in getattr(self.response, "output", None) or ()
                if getattr(item, "type", None) == "function_call"]


class UsageEventStreamState:
    """Other streams (transcriptions, image generation): usage rides on a final event."""

    __slots__ = ("usage", "text")

    def __init__(self) -> None:
        self.usage: Any = None
        self.text: str | None = None

    def on_chunk(self, event: Any) -> bool:
        usage = getattr(event, "usage", None)
        if usage is not None:
            self.usage = usage
            text = getattr(event, "text", None)
            if isinstance(text, str):
                self.text = text
        return False

    def attributes(self, attrs: dict[str, Any]) -> None:
        if self.usage is not None:
            oa._usage_responses(self.usage, attrs)

    def first_text(self) -> str | None:
        return self.text

    def tool_calls(self) -> list[tuple[str, str]]:
        return []
