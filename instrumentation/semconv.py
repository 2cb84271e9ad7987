"""Attribute, event and metric names: the OpenTelemetry GenAI semantic conventions plus ours.

Every name the instrumentation writes is a constant here, so a rename in the conventions
is a one-line change. GenAI names follow semantic-conventions-genai (status: Development);
``gen_ai.provider.name`` replaces the deprecated ``gen_ai.system``. Names under ``llmtel.``
and ``gen_ai.usage.cost`` are ours: the conventions define no cost attribute yet
(semantic-conventions-genai PR #443).
"""

# Operation and provider
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"

# Request
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_REQUEST_ENCODING_FORMATS = "gen_ai.request.encoding_formats"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"

# Response
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"

# Usage; input_tokens includes cached tokens and output_tokens includes reasoning tokens.
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_USAGE_COST = "gen_ai.usage.cost"  # USD; not (yet) a semantic convention
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"

# Tools and content (content names are opt-in)
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_OPERATION_DETAILS_EVENT = "gen_ai.client.inference.operation.details"

# OpenAI-specific
OPENAI_REQUEST_SERVICE_TIER = "openai.request.service_tier"
OPENAI_RESPONSE_SERVICE_TIER = "openai.response.service_tier"
OPENAI_RESPONSE_SYSTEM_FINGERPRINT = "openai.response.system_fingerprint"

# General
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"

# Agents, tools, workflows
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_AGENT_DESCRIPTION = "gen_ai.agent.description"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_DESCRIPTION = "gen_ai.tool.description"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"

# The OpenAI Agents SDK's own notions (ours; no convention yet)
LLMTEL_AGENT_TOOLS = "llmtel.agent.tools"
LLMTEL_AGENT_HANDOFFS = "llmtel.agent.handoffs"
LLMTEL_HANDOFF_FROM_AGENT = "llmtel.handoff.from_agent"
LLMTEL_HANDOFF_TO_AGENT = "llmtel.handoff.to_agent"
LLMTEL_GUARDRAIL_NAME = "llmtel.guardrail.name"
LLMTEL_GUARDRAIL_TRIGGERED = "llmtel.guardrail.triggered"

# Who and what a request is about (general conventions; tags and metadata are ours)
USER_ID = "user.id"
SESSION_ID = "session.id"
LLMTEL_TAGS = "llmtel.tags"
LLMTEL_METADATA_PREFIX = "llmtel.metadata."

# Ours
LLMTEL_IMAGES_COUNT = "llmtel.images.count"
LLMTEL_AUDIO_DURATION = "llmtel.audio.duration"  # seconds
LLMTEL_REQUEST_ATTEMPTS = "llmtel.request.attempts"
LLMTEL_RETRY_EVENT = "llmtel.retry"
LLMTEL_RETRY_ATTEMPT = "llmtel.retry.attempt"
LLMTEL_OUTPUT_VALID = "llmtel.output.valid"
LLMTEL_OUTPUT_ERROR = "llmtel.output.error"

# Operation names
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_EMBEDDINGS = "embeddings"
OP_GENERATE_CONTENT = "generate_content"
OP_EXECUTE_TOOL = "execute_tool"
OP_INVOKE_AGENT = "invoke_agent"
OP_INVOKE_WORKFLOW = "invoke_workflow"
# Not (yet) in the conventions' list; named like the OpenAI endpoints they trace.
OP_TRANSCRIPTION = "transcription"
OP_TRANSLATION = "translation"
OP_SPEECH = "speech"
OP_IMAGE_GENERATION = "image_generation"
OP_IMAGE_EDIT = "image_edit"
OP_MODERATION = "moderation"

# Metrics (names, units and bucket boundaries from gen-ai-metrics.md)
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
