"""Gateway settings: the device-facing side of the pipeline."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from voice_pipeline.gateway.pipeline_status import PipelineStatusSettings


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("0.0.0.0", description="Address the WebSocket/HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the WebSocket, OTA, /healthz and /metrics.")
    # One by default, by measurement (docs/benchmarks.md): on 2 cores at the supported load the
    # event loop used 0.25 of a core and whisper's batches the rest; two workers split the ASR
    # batches and made first audio slower (p95 3.1 s against 2.0-2.6 s at 44 devices).
    workers: int = Field(
        1,
        ge=0,
        description=(
            "All-in-one `serve`: server processes sharing the port, each with every stage and its own "
            "models (0 = one per usable CPU). Session and connection limits are split between them."
        ),
    )
    public_url: str = Field(
        "",
        description="WebSocket URL handed to devices by the OTA endpoint; empty = derived from the request.",
    )
    output_sample_rate: int = Field(
        24000, description="Opus rate of the reply audio announced in the server hello (16000 or 24000)."
    )
    frame_ms: int = Field(60, description="Opus frame duration of the reply audio (the protocol uses 60).")
    playback_lead_ms: int = Field(
        300, ge=60, le=2000, description="Audio sent ahead of playback; the device queue holds 2.4 s."
    )
    hello_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Close a connection that sends no hello in time (firmware sends it at once).",
    )
    idle_timeout_s: float = Field(
        120.0, gt=0, description="Close a session after this long without voice or messages."
    )
    max_sessions: int = Field(
        500, ge=1, description="Sessions (connections past hello) beyond this are refused (close code 1013)."
    )
    max_pending_hello: int = Field(
        256, ge=1, description="Connections waiting for their hello at once; more are refused (1013)."
    )
    max_connections_per_ip: int = Field(
        32, ge=0, description="Connections from one address (a NAT may hold several devices); 0 = no limit."
    )
    uplink_realtime_factor: float = Field(
        1.5, gt=0, description="Uplink audio accepted per second of wall time; faster audio is dropped."
    )
    uplink_burst_s: float = Field(
        6.0,
        gt=0,
        description=(
            "Audio seconds a device may send ahead of that budget: network jitter and this server's "
            "own stalls (frames queued while the loop was busy arrive at once; 2 s cut real devices "
            "in the 20-device soak on a loaded box)."
        ),
    )
    max_messages_per_s: float = Field(
        100.0, gt=0, description="Messages per second per connection (60 ms audio is ~17); more are dropped."
    )
    message_burst: int = Field(
        200, ge=1, description="Messages allowed ahead of that rate; as many more dropped close with 1008."
    )
    max_message_bytes: int = Field(
        65536, ge=1024, description="Largest WebSocket message accepted; larger closes with 1009."
    )
    language: str = Field(
        "auto", description="ASR language: zh, en or auto (auto picks among asr.languages)."
    )
    preroll_ms: int = Field(300, ge=0, description="Audio kept before the VAD speech start.")
    min_utterance_ms: int = Field(400, ge=0, description="Shorter utterances are ignored (noise, clicks).")
    # Measured (2026-11-29, 57 devices, emulated providers): early runs whenever no transcription
    # was in flight still took p95 first audio from ~1.8 s to 2.3 s; gated on recent busy-ness they
    # run at low and medium load, where they lower the floor, and stay off near capacity.
    early_asr_max_busy: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Transcribe early (at the VAD's pause) only while ASR was busy less than this share of "
        "the recent time (5 s half-life) and idle now; 0 = never.",
    )
    # Measured on the `make bench-asr` English clips (2026-11-30), fed in 60 ms device chunks: the
    # VAD's pause comes p50 190 ms after the last voiced frame (Silero scores the tail as voice),
    # 60 ms of quiet 80 ms after it, with 1.2 quiet gaps inside each sentence that start runs
    # thrown away (90 ms: 120 ms after, 0.4 gaps; 120 ms: 140 ms, 0.14). Runs start only while
    # ASR is idle (early_asr_max_busy), so a gap costs idle CPU.
    early_quiet_ms: int = Field(
        60,
        ge=0,
        description="Transcribe early once this much audio after the last voiced 10 ms frame (-40 dBFS) is "
        "quiet, without waiting for the VAD's pause (0 = only at the VAD's pause).",
    )
    # With fast providers (a cache hit, a local stand-in) the first audio can be ready ~50 ms after
    # the end, before speech that paused resumes: `make bench-asr` (2026-11-30) saw it resume up to
    # 512 ms after a 160 ms end (between two sentences; 256 ms inside one), the fixture en_hello 96
    # ms after a 200 ms end.
    hold_min_ms: int = Field(
        520,
        ge=0,
        description="A reply starts playing no sooner than this after the VAD ended its turn, so speech "
        "that resumes in that time still joins the turn (slower replies are not delayed).",
    )
    # A short end-of-turn silence (vad.min_silence_ms) is safe because a turn is held until its
    # reply plays, and speech that resumes joins it; but each end taken back cost a transcription.
    # Near capacity that transcription delays other turns, so there the end waits longer: 180 ms
    # more (three 60 ms device frames) after the 160 ms end make the ~350 ms of before. Measured
    # at 56 devices (2026-11-30, interleaved, with a 200 ms end): 12-13 turns taken back a minute
    # with 150 ms more, 76-81 without.
    busy_end_extra_ms: int = Field(
        180,
        ge=0,
        description="While ASR is busy (the early-transcription gate is shut), a turn the VAD ended is "
        "transcribed only after this much more silence; speech in it continues the turn at no cost.",
    )
    # Off by default, by measurement (one device, 2-core EPYC, 2026-11-29): the pause comes ~200 ms
    # before the turn's end and whisper-base takes 230-280 ms to transcribe it, so the request
    # started no earlier than at the end (no gain), while 4 of 11 pauses were not the end (+57%
    # requests). It pays where ASR is several times faster than the rest of the end-of-turn wait.
    early_reply: bool = Field(
        False,
        description="Start the language model on an early transcript while the VAD still waits for the end "
        "of the turn; cancelled if speech goes on (the provider is billed a prompt and a few tokens).",
    )
    max_utterance_s: float = Field(
        20.0, gt=0, description="An utterance is cut and transcribed at this length."
    )
    exit_commands: list[str] = Field(
        default_factory=lambda: ["退出", "关闭"],
        description="A transcript exactly equal to one of these ends the session.",
    )
    reply_timeout_s: float = Field(60.0, gt=0, description="Upper bound on one reply (LLM + TTS).")
    pipeline: PipelineStatusSettings = Field(
        default_factory=PipelineStatusSettings,
        description="The VoicePipeline shown on the status page (set by the operator in a cluster).",
    )
