"""Instrumentation settings: read once from the environment into a frozen dataclass.

Each setting has one parse function that warns and falls back on a bad value; nothing else
in the instrumentation reads ``os.environ``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from llmtel.instrumentation import environment_variables as env

_logger = logging.getLogger(__name__)


class ContentMode(Enum):
    NONE = "none"
    SPAN = "span_only"
    EVENT = "event_only"
    SPAN_AND_EVENT = "span_and_event"

    @property
    def on_span(self) -> bool:
        return self in (ContentMode.SPAN, ContentMode.SPAN_AND_EVENT)

    @property
    def as_event(self) -> bool:
        return self in (ContentMode.EVENT, ContentMode.SPAN_AND_EVENT)


DEFAULT_CONTENT_MAX_LENGTH = 8192


@dataclass(frozen=True)
class Settings:
    content_mode: ContentMode = ContentMode.NONE
    content_max_length: int = DEFAULT_CONTENT_MAX_LENGTH
    prices_file: str | None = None
    stream_usage: bool = True
    hash_user_id: bool = False
    user_id_salt: str = ""
    console_summary: bool = False

    @property
    def capture_content(self) -> bool:
        return self.content_mode is not ContentMode.NONE


def parse_content_mode(value: str | None) -> ContentMode:
    if value is None:
        return ContentMode.NONE
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return ContentMode.SPAN
    if text in ("", "false", "0", "no", "off", "none", "no_content"):
        return ContentMode.NONE
    for mode in ContentMode:
        if text == mode.value:
            return mode
    _logger.warning(
        "%s=%r is not one of true, false, span_only, event_only, span_and_event; capturing no content",
        env.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
        value,
    )
    return ContentMode.NONE


def parse_max_length(value: str | None) -> int:
    if value is None or not value.strip():
        return DEFAULT_CONTENT_MAX_LENGTH
    try:
        number = int(value)
        if number < 0:
            raise ValueError(value)
        return number
    except ValueError:
        _logger.warning(
            "%s=%r is not a whole number of characters >= 0; using %d",
            env.OTEL_INSTRUMENTATION_LLMTEL_CONTENT_MAX_LENGTH,
            value,
            DEFAULT_CONTENT_MAX_LENGTH,
        )
        return DEFAULT_CONTENT_MAX_LENGTH


def parse_bool(name: str, value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    _logger.warning("%s=%r is not true or false; using %s", name, value, str(default).lower())
    return default


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The instrumentation's settings from ``environ`` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    prices_file = environ.get(env.OTEL_INSTRUMENTATION_LLMTEL_PRICES_FILE, "").strip() or None
    return Settings(
        content_mode=parse_content_mode(environ.get(env.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)),
        content_max_length=parse_max_length(environ.get(env.OTEL_INSTRUMENTATION_LLMTEL_CONTENT_MAX_LENGTH)),
        prices_file=prices_file,
        stream_usage=parse_bool(
            env.OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE,
            environ.get(env.OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE),
            True,
        ),
        hash_user_id=parse_bool(
            env.OTEL_INSTRUMENTATION_LLMTEL_HASH_USER_ID,
            environ.get(env.OTEL_INSTRUMENTATION_LLMTEL_HASH_USER_ID),
            False,
        ),
        user_id_salt=environ.get(env.OTEL_INSTRUMENTATION_LLMTEL_USER_ID_SALT, ""),
        console_summary=parse_bool(
            env.OTEL_INSTRUMENTATION_LLMTEL_CONSOLE_SUMMARY,
            environ.get(env.OTEL_INSTRUMENTATION_LLMTEL_CONSOLE_SUMMARY),
            False,
        ),
    )
