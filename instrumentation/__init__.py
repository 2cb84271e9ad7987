"""OpenTelemetry instrumentation for LLM applications.

``OpenAIInstrumentor`` instruments the ``openai`` client (``opentelemetry-instrument`` loads it
by itself); ``workflow``, ``agent``, ``tool`` and ``context`` shape one request into one tree.
"""

from llmtel.instrumentation.api import agent, context, tool, workflow
from llmtel.instrumentation.openai_instrumentor import OpenAIInstrumentor

__all__ = ["OpenAIInstrumentor", "agent", "context", "tool", "workflow"]
