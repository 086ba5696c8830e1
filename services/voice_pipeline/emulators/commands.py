"""`voice-pipeline emulate llm|tts`: local provider emulators with documented latency profiles."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "emulate",
        help="run a provider emulator (OpenAI-compatible LLM or /v1/audio/speech TTS) for capacity runs",
        description="Local stand-ins for cloud providers with fixed latency profiles, so capacity runs "
        "measure this system's own cost. Run each as its own process; its CPU is not the system's.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    llm = kinds.add_parser(
        "llm",
        help="OpenAI-compatible streaming /v1/chat/completions (SSE)",
        description="Answers /v1/chat/completions (stream true or false) with a short reply in the language "
        "of the last user message: first token after --ttft-ms, then --tokens-per-s. Point the pipeline "
        "at it with VP_LLM__BASE_URL=http://HOST:PORT/v1.",
    )
    llm.add_argument("--ttft-ms", type=float, default=400.0, help="time to first token (default 400)")
    llm.add_argument(
        "--tokens-per-s", type=float, default=30.0, help="token rate after the first (default 30)"
    )
    llm.add_argument(
        "--reply-repeat", type=int, default=1, help="say the canned reply this many times (default 1)"
    )
    _common(llm)
    llm.set_defaults(func=_emulate_llm)
    tts = kinds.add_parser(
        "tts",
        help="OpenAI /v1/audio/speech, response_format pcm (raw s16le mono 24 kHz, streamed)",
        description="Answers /v1/audio/speech with audio as long as the text takes to say: first chunk "
        "after --first-audio-ms, then --speed-factor x real time. Content: a speech-like tone rendered "
        "once, or --voice-wav.",
    )
    tts.add_argument("--first-audio-ms", type=float, default=250.0, help="time to first audio (default 250)")
    tts.add_argument(
        "--speed-factor",
        type=float,
        default=4.0,
        help="audio delivered this many times faster than real time",
    )
    tts.add_argument("--chunk-ms", type=int, default=100, help="audio per streamed chunk (default 100)")
    tts.add_argument("--voice-wav", help="WAV file to slice the audio from instead of the rendered tone")
    _common(tts)
    tts.set_defaults(func=_emulate_tts)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="port to listen on")


def _emulate_llm(args: argparse.Namespace) -> int:
    from voice_pipeline.emulators.llm import create_llm_app
    from voice_pipeline.emulators.profiles import LlmProfile

    profile = LlmProfile(ttft_ms=args.ttft_ms, tokens_per_s=args.tokens_per_s, reply_repeat=args.reply_repeat)
    if profile.tokens_per_s <= 0 or profile.ttft_ms < 0 or profile.reply_repeat < 1:
        print("error: --tokens-per-s must be > 0, --ttft-ms >= 0 and --reply-repeat >= 1", file=sys.stderr)
        return 2
    return _serve(create_llm_app(profile), args, profile.describe())


def _emulate_tts(args: argparse.Namespace) -> int:
    from voice_pipeline.emulators.profiles import TtsProfile
    from voice_pipeline.emulators.tts import create_tts_app

    profile = TtsProfile(
        first_audio_ms=args.first_audio_ms, speed_factor=args.speed_factor, chunk_ms=args.chunk_ms
    )
    if profile.speed_factor <= 0 or profile.chunk_ms <= 0 or profile.first_audio_ms < 0:
        print("error: --speed-factor and --chunk-ms must be > 0, --first-audio-ms >= 0", file=sys.stderr)
        return 2
    return _serve(create_tts_app(profile, args.voice_wav), args, profile.describe())


def _serve(app: Any, args: argparse.Namespace, describe: str) -> int:
    import uvicorn

    print(f"emulator on http://{args.host}:{args.port}/v1 ({describe})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
