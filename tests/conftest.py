from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_openai import FakeOpenAI


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
