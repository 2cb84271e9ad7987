"""The smallest instrumented app: no llmtel import, just the openai client.

    OTEL_TRACES_EXPORTER=console opentelemetry-instrument python examples/hello.py

Talks to OpenAI (``OPENAI_API_KEY``) or any OpenAI-compatible server (``OPENAI_BASE_URL``).
"""

import openai


def main() -> None:
    client = openai.OpenAI()
    model = "gpt-4o-mini"
    try:
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello in five words."}], max_tokens=20
        )
        print(answer.choices[0].message.content)
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Count to five."}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
        print()
    except openai.OpenAIError as error:
        # The span of the failed call carries error.type and the exception either way.
        print(f"the call failed: {error.__class__.__name__}: {error}")


if __name__ == "__main__":
    main()
