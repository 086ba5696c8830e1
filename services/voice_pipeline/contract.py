"""The contract between the stage services and the operator.

Both sides import these names instead of spelling strings of their own, so a renamed metric or
label breaks loudly in one place. Keep this module free of heavy imports: the operator image
installs the package without any model runtime.
"""

from __future__ import annotations

from typing import Final, Literal

Stage = Literal["gateway", "vad", "asr", "llm", "tts"]
STAGES: Final[tuple[Stage, ...]] = ("gateway", "vad", "asr", "llm", "tts")
# Stages that run model work the operator sizes (the gateway is sized by sessions).
MODEL_STAGES: Final[tuple[Stage, ...]] = ("vad", "asr", "llm", "tts")

# --- Prometheus metric names (no per-session labels, ever) ---------------------------------
METRIC_REQUESTS: Final = "voice_stage_requests_total"  # labels: stage, outcome
METRIC_LATENCY: Final = "voice_stage_latency_seconds"  # histogram; labels: stage
METRIC_QUEUE_WAIT: Final = "voice_stage_queue_wait_seconds"  # histogram; labels: stage
METRIC_BUSY: Final = "voice_stage_busy_seconds_total"  # compute seconds; labels: stage
METRIC_INFLIGHT: Final = "voice_stage_inflight"  # gauge; labels: stage
METRIC_MAX_CONCURRENCY: Final = "voice_stage_max_concurrency"  # gauge; labels: stage
METRIC_BATCH_SIZE: Final = "voice_stage_batch_size"  # histogram; labels: stage
METRIC_CACHE: Final = "voice_cache_requests_total"  # labels: stage, result
METRIC_PROVIDER: Final = "voice_provider_requests_total"  # labels: stage, provider, outcome
METRIC_SESSIONS: Final = "voice_gateway_sessions"  # gauge
METRIC_E2E_FIRST_AUDIO: Final = "voice_e2e_first_audio_seconds"  # histogram
METRIC_TURN_STEP: Final = "voice_turn_step_seconds"  # histogram; labels: step (turn.timeline)
METRIC_EARLY_ASR: Final = "voice_gateway_early_asr_total"  # labels: result (used, dropped, failed)
METRIC_EARLY_REPLY: Final = "voice_gateway_early_reply_total"  # labels: result (used, dropped)
METRIC_TURNS_RESUMED: Final = "voice_gateway_turns_resumed_total"

LABEL_STAGE: Final = "stage"
LABEL_OUTCOME: Final = "outcome"
LABEL_RESULT: Final = "result"
LABEL_PROVIDER: Final = "provider"
LABEL_STEP: Final = "step"
# Values of `step` (voice_pipeline.turn.timeline says what each spans), in the order they happen;
# the gateway observes these, the TTS stage TURN_STEP_ENCODE (a part of tts_first_audio).
TURN_STEPS: Final = ("silence", "vad", "asr", "llm_first_token", "first_sentence", "tts_first_audio", "send")
TURN_STEP_ENCODE: Final = "encode"

Outcome = Literal["ok", "error", "overload", "cancelled"]
CacheResult = Literal["hit", "miss", "error", "bypass"]

# --- Kubernetes labels and configuration keys ------------------------------------------------
API_GROUP: Final = "voice.pipeline.dev"
API_VERSION: Final = "v1alpha1"
KIND: Final = "VoicePipeline"
PLURAL: Final = "voicepipelines"
LABEL_APP: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
APP_NAME: Final = "voice-pipeline"

# Settings each stage service reads its operator-chosen sizing from. One naming scheme everywhere:
# env `VP_<SECTION>__<KEY>`, the same keys as in all-in-one mode (a stage service's settings class
# has the section of its stage, e.g. `VP_ASR__BATCH_MAX_SIZE`). A unit test checks that every name
# the operator sets is accepted by that stage's settings class.
ENV_PREFIX: Final = "VP_"
KEY_BATCH_SIZE: Final = "batch_max_size"
KEY_BATCH_WAIT_MS: Final = "batch_max_wait_ms"
KEY_MAX_CONCURRENCY: Final = "max_concurrency"
KEY_QUEUE_SIZE: Final = "queue_size"
# The sizing keys each stage has (VAD/ASR batch, LLM/TTS bound concurrency; the gateway is sized
# by replicas alone).
SIZING_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "gateway": (),
    "vad": (KEY_BATCH_SIZE, KEY_BATCH_WAIT_MS, KEY_QUEUE_SIZE),
    "asr": (KEY_BATCH_SIZE, KEY_BATCH_WAIT_MS, KEY_QUEUE_SIZE),
    "llm": (KEY_MAX_CONCURRENCY, KEY_QUEUE_SIZE),
    "tts": (KEY_MAX_CONCURRENCY, KEY_QUEUE_SIZE),
}
CACHED_STAGES: Final[tuple[Stage, ...]] = ("asr", "llm", "tts")
ENV_REDIS_URL: Final = "VP_CACHE__REDIS_URL"
# The stage services' shared secret, as a file: checked by each stage, presented by the gateway.
ENV_SERVICE_AUTH_TOKEN_FILE: Final = "VP_SERVICE__AUTH_TOKEN_FILE"
ENV_STAGES_AUTH_TOKEN_FILE: Final = "VP_STAGES__AUTH_TOKEN_FILE"
# The VoicePipeline a gateway belongs to: it reads its plan and conditions for the status page.
ENV_GATEWAY_PIPELINE_NAME: Final = "VP_GATEWAY__PIPELINE__NAME"
ENV_GATEWAY_PIPELINE_NAMESPACE: Final = "VP_GATEWAY__PIPELINE__NAMESPACE"

# Engines a VoicePipeline may choose per stage (`spec.stages.<stage>.engine`), the first being the
# stage's default, and the setting that carries the choice to the stage: ASR's `backend`
# (`VP_ASR__BACKEND`), TTS's per-language engine order (`VP_TTS__ENGINES`, JSON). The LLM's engine
# follows from its providers: none (or one without a base URL) runs the local llama.cpp server.
ASR_ENGINES: Final[tuple[str, ...]] = ("whisper", "sensevoice", "openai")
TTS_ENGINES: Final[tuple[str, ...]] = ("edge", "azure", "iflytek", "openai", "piper", "espeak")
ENGINES: Final[dict[str, tuple[str, ...]]] = {"asr": ASR_ENGINES, "tts": TTS_ENGINES}
KEY_ASR_BACKEND: Final = "backend"
# A replica runs one copy of the ASR model, as calibrate costs it: no solo copy (AsrSettings.solo_threads).
KEY_ASR_SOLO_THREADS: Final = "solo_threads"
KEY_TTS_ENGINES: Final = "engines"
TTS_LANGUAGES: Final[tuple[str, ...]] = ("zh", "en")
TTS_FALLBACK_ENGINE: Final = "espeak"  # local, always installed: speaks when the chosen engine fails
LLM_LOCAL_ENGINE: Final = "llamacpp"
LLM_CLOUD_ENGINE: Final = "cloud"
KEY_LLM_LOCAL_THREADS: Final = "local_threads"


def env_name(section: str, key: str) -> str:
    """`("asr", "batch_max_size")` -> `VP_ASR__BATCH_MAX_SIZE`."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def env_stage_url(stage: str) -> str:
    """The gateway's setting naming a stage service: `VP_STAGES__ASR_URL`."""
    return env_name("stages", f"{stage}_url")
