"""A support bot, instrumented without a line of llmtel in its LLM calls.

One customer request becomes one trace:

    invoke_workflow support-request
    ├── transcription whisper-1                 the customer's voice message
    ├── invoke_agent triage
    │   ├── chat gpt-4o-mini                    asks for the lookup_order tool
    │   ├── execute_tool lookup_order           carries the tool call's id
    │   └── chat gpt-4o-mini                    answers with the order status
    ├── execute_tool search_knowledge
    │   └── embeddings text-embedding-3-small   ×4, in a thread pool
    ├── invoke_agent writer
    │   └── chat gpt-4o-mini                    streamed
    └── chat no-such-model                      fails; the app handles it

Run it with OpenAI (``OPENAI_API_KEY``) or any OpenAI-compatible server (``OPENAI_BASE_URL``)::

    OTEL_TRACES_EXPORTER=console opentelemetry-instrument python examples/support_bot.py

Models come from ``SUPPORT_BOT_CHAT_MODEL``, ``SUPPORT_BOT_EMBEDDING_MODEL`` and
``SUPPORT_BOT_TRANSCRIPTION_MODEL``. An operation the server lacks (a small local model has no
transcription) is skipped with a note; the bot goes on.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import wave
from concurrent.futures import ThreadPoolExecutor

import openai

from llmtel.instrumentation import agent, context, tool, workflow

CHAT_MODEL = os.environ.get("SUPPORT_BOT_CHAT_MODEL", "gpt-4o-mini")
EMBEDDING_MODEL = os.environ.get("SUPPORT_BOT_EMBEDDING_MODEL", "text-embedding-3-small")
TRANSCRIPTION_MODEL = os.environ.get("SUPPORT_BOT_TRANSCRIPTION_MODEL", "whisper-1")

ORDERS = {"A1001": {"status": "shipped", "carrier": "DHL", "eta_days": 2}}
ARTICLES = [
    "Orders ship within two business days.",
    "Refunds reach your account five days after we receive the return.",
    "You can change the delivery address until the order ships.",
]
LOOKUP_ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up the status of an order by its id",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}
# What an endpoint says when it lacks an operation: skip it, never crash.
UNSUPPORTED = (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError,
               openai.InternalServerError, openai.APIConnectionError)

client = openai.OpenAI()


@tool(description="Look up the status of an order by its id")
def lookup_order(order_id: str) -> dict:
    return ORDERS.get(order_id.strip().upper(), {"status": "unknown order"})


def embed(text: str) -> list[float]:
    return client.embeddings.create(model=EMBEDDING_MODEL, input=text).data[0].embedding


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


@tool(description="Find the help article closest to the question")
def search_knowledge(question: str) -> str:
    with ThreadPoolExecutor(max_workers=4) as pool:  # one embedding call per text, in parallel
        question_vector, *article_vectors = pool.map(embed, [question, *ARTICLES])
    scores = [cosine(question_vector, vector) for vector in article_vectors]
    return ARTICLES[scores.index(max(scores))]


@agent("triage", description="Finds the facts a support answer needs")
def triage(question: str) -> str:
    messages = [
        {"role": "system", "content": "You are a support agent. Use lookup_order for order questions."},
        {"role": "user", "content": question},
    ]
    first = client.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[LOOKUP_ORDER_TOOL],
                                           max_tokens=100)
    message = first.choices[0].message
    calls = message.tool_calls or []
    if calls:
        messages.append(message.model_dump(exclude_none=True))
        for call in calls:
            result = lookup_order(**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    else:
        # A small model may not call tools: look the order up ourselves.
        order_id = re.search(r"\b[A-Z]\d{4}\b", question)
        result = lookup_order(order_id.group(0) if order_id else "")
        messages.append({"role": "user", "content": f"Order lookup result: {json.dumps(result)}"})
    final = client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=100)
    return final.choices[0].message.content or ""


@agent("writer", description="Writes the reply to the customer")
def write_reply(question: str, facts: str, article: str) -> str:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {"role": "system", "content": "Write a short, friendly reply to the customer."},
            {"role": "user", "content": f"Question: {question}\nFacts: {facts}\nHelp article: {article}"},
        ],
        max_tokens=120,
        stream=True,
    )
    parts = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def voice_message() -> tuple[str, bytes, str]:
    """Half a second of silence as a WAV file: a stand-in for the customer's voice message."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16000)
        audio.writeframes(struct.pack("<h", 0) * 8000)
    return ("voice.wav", buffer.getvalue(), "audio/wav")


def transcribe() -> str | None:
    try:
        return client.audio.transcriptions.create(model=TRANSCRIPTION_MODEL, file=voice_message()).text
    except UNSUPPORTED as error:
        print(f"note: transcription skipped, the endpoint does not offer it ({type(error).__name__})")
        return None


def handle_request(question: str) -> str:
    with context(user_id="customer-42", session_id="session-7", tags=["example"]), workflow("support-request"):
        transcript = transcribe()
        if transcript:
            question = f"{question} {transcript}".strip()
        facts = triage(question)
        try:
            article = search_knowledge(question)
        except UNSUPPORTED as error:
            print(f"note: knowledge search skipped, the endpoint has no embeddings ({type(error).__name__})")
            article = ""
        reply = write_reply(question, facts, article)
        try:  # a call that fails: the app handles it, the trace shows it
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        except openai.APIStatusError as error:
            print(f"handled: {type(error).__name__} from a model that does not exist")
        return reply


def main() -> None:
    print(handle_request("Where is my order A1001?"))


if __name__ == "__main__":
    main()
