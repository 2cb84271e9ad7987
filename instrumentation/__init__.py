"""OpenTelemetry instrumentation for LLM applications."""

from llmtel.instrumentation.openai_instrumentor import OpenAIInstrumentor

__all__ = ["OpenAIInstrumentor"]
