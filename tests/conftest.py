from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from fake_openai import FakeOpenAI
from telemetry_capture import TelemetryCapture

# Never in any telemetry: tests that capture content check for it.
API_KEY = "sk-test-secret-key-never-in-telemetry"


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """The fake OpenAI API (tests/fake_openai.py), one server for the whole session."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset_fake_openai(request: pytest.FixtureRequest) -> None:
    """Before each test that uses the fake, forget the previous test's settings, requests and failures."""
    if "fake_openai" in request.fixturenames:
        request.getfixturevalue("fake_openai").reset()


@pytest.fixture
def telemetry(fake_openai: FakeOpenAI) -> Iterator[TelemetryCapture]:
    """In-memory SDK providers, with the openai instrumentation on for the test."""
    capture = TelemetryCapture()
    with capture.instrumented():
        yield capture


@pytest.fixture
def client(fake_openai: FakeOpenAI) -> openai.OpenAI:
    """A real openai client talking to the fake; retries on, as in an application."""
    return openai.OpenAI(base_url=fake_openai.base_url, api_key=API_KEY, max_retries=2)


@pytest.fixture
def aclient(fake_openai: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key=API_KEY, max_retries=2)
