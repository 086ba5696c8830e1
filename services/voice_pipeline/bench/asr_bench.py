"""`make bench-asr`: accuracy and cost of the ASR decoding on the fixed test set (issue 14).

Three measurements, one record (bench/results/<date>-asr.json, kind "asr-accuracy"):
- accuracy: WER (English) / CER (Chinese) with the default decoding (AsrSettings as shipped) and
  the reference decoding (30 s window, greedy, no repetition penalty, no n-gram ban, no duration
  cap), both under `auto` language like a default device, one utterance per call;
- bad audio: CPU per utterance on garbled clips (noise, reversed speech, Mandarin under auto,
  English on a device set to Chinese, a long repeated clip) with the previous decoding (10 s window,
  penalties, the old fixed cap) and with the current one;
- endpointing: Silero VAD + the segmenter over the clips with trailing silence, for several
  end-of-turn silences: utterances cut before their end, and the delay from the end of speech to
  the end-of-turn event;
- the uplink: the same clips after the device's Opus uplink (encoded as the simulator encodes
  them, decoded as the gateway does), default decoding: what every device's speech goes through.

CPU is process CPU time (user + system, every thread of CTranslate2 included): the machine is
shared, so wall time moves with the neighbours' load while CPU time mostly does not. The load
average is recorded before and after.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from voice_pipeline.bench.asr_set import Clip, audio
from voice_pipeline.bench.asr_text import error_rate, tokens
from voice_pipeline.common.audio import Int16Array, int16_to_float, last_voiced_sample

F32 = npt.NDArray[np.float32]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass(frozen=True)
class Decoding:
    """One way of decoding, as WhisperEngine arguments."""

    name: str
    min_window_s: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    tokens_per_second: float
    max_decode_tokens: int
    stop_loops: bool
    language_min_probability: float

    def describe(self) -> str:
        cap = (
            f"cap {self.max_decode_tokens} tokens"
            if self.tokens_per_second <= 0
            else f"cap 8 + {self.tokens_per_second:g} tokens/s (at most {self.max_decode_tokens})"
        )
        return (
            f"window >= {self.min_window_s:g} s, greedy, repetition penalty {self.repetition_penalty:g}, "
            f"no-repeat n-gram {self.no_repeat_ngram_size or 'off'}, {cap}, "
            f"loop stop {'on' if self.stop_loops else 'off'}, language fallback below "
            f"{self.language_min_probability:g}"
        )


def default_decoding() -> Decoding:
    from voice_pipeline.asr.settings import AsrSettings

    s = AsrSettings()
    return Decoding(
        "default",
        s.encoder_window_s,
        s.repetition_penalty,
        s.no_repeat_ngram_size,
        s.tokens_per_second,
        s.max_decode_tokens,
        True,
        s.language_min_probability,
    )


# Whisper's own decoding for one short utterance: the full 30 s window, greedy, nothing banned,
# whisper's whole 224-token budget.
REFERENCE = Decoding("reference", 30.0, 1.0, 0, 0.0, 224, False, 0.0)
# What ran before issue 14 (commit 8286f44): 10 s window, penalty 1.1, no-repeat 4-grams and
# max_length 96, which CTranslate2 turns into 48 tokens; no loop stop, no language fallback.
PREVIOUS = Decoding("previous", 10.0, 1.1, 4, 0.0, 48, False, 0.0)


def unbounded(decoding: Decoding) -> Decoding:
    """The same decoding without the bad-audio bounds (fixed 96-token cap, no loop stop, no
    language fallback): what the bounds alone buy."""
    return Decoding(
        f"{decoding.name} unbounded",
        decoding.min_window_s,
        decoding.repetition_penalty,
        decoding.no_repeat_ngram_size,
        0.0,
        96,
        False,
        0.0,
    )


def engine_for(decoding: Decoding, threads: int) -> Any:
    from voice_pipeline.asr.settings import AsrSettings
    from voice_pipeline.asr.whisper import WhisperEngine
    from voice_pipeline.models.registry import require_model

    s = AsrSettings()
    return WhisperEngine(
        require_model(s.whisper_model),
        threads=threads,
        beam_size=1,
        max_decode_tokens=decoding.max_decode_tokens,
        languages=s.languages,
        min_window_s=decoding.min_window_s,
        repetition_penalty=decoding.repetition_penalty,
        no_repeat_ngram_size=decoding.no_repeat_ngram_size,
        tokens_per_second=decoding.tokens_per_second,
        cap_floor_tokens=s.cap_floor_tokens,
        stop_loops=decoding.stop_loops,
        language_min_probability=decoding.language_min_probability,
        fallback_language=s.fallback_language,
    )


def transcribe_timed(engine: Any, pcm: F32, language: str) -> dict[str, Any]:
    from voice_pipeline.asr.engine import AsrItem
    from voice_pipeline.asr.settings import AsrSettings
    from voice_pipeline.asr.stage import prepare_utterance

    c0, t0 = cpu_seconds(), time.perf_counter()
    item = AsrItem(prepare_utterance(pcm, AsrSettings()), language)  # as the stage does
    result = engine.transcribe_batch([item])[0]
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
    return {
        "text": result.text,
        "language": result.language,
        "tokens": engine.last_token_counts[0],
        "detection": engine.last_detections[0] if engine.last_detections else {},
        "cpu_s": round(cpu, 4),
        "wall_s": round(wall, 4),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, int(np.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def rate_of(rows: Sequence[dict[str, Any]], language: str, key: str = "text") -> float:
    """WER (en) or CER (zh) over the rows in `language`: their reference against `row[key]`."""
    chosen = [r for r in rows if r["ref_language"] == language]
    return error_rate([(tokens(r["reference"], language), tokens(r[key], language)) for r in chosen])


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    en = [r for r in rows if r["ref_language"] == "en"]
    zh = [r for r in rows if r["ref_language"] == "zh"]
    cpu = [r["cpu_s"] for r in rows]
    wall = [r["wall_s"] for r in rows]
    seconds = sum(r["seconds"] for r in rows)
    return {
        "utterances": len(rows),
        "wer_en": rate_of(rows, "en"),
        "cer_zh": rate_of(rows, "zh"),
        "en_utterances": len(en),
        "zh_utterances": len(zh),
        "exact_en": sum(tokens(r["reference"], "en") == tokens(r["text"], "en") for r in en),
        "wrong_language": sum(r["language"] != r["ref_language"] for r in rows),
        "cpu_s_mean": statistics.fmean(cpu),
        "cpu_s_p95": percentile(cpu, 95),
        "cpu_per_audio_second": sum(cpu) / seconds if seconds else 0.0,
        "wall_s_p50": percentile(wall, 50),
        "wall_s_p95": percentile(wall, 95),
        "tokens_per_second_p99": percentile([r["tokens"] / r["seconds"] for r in rows], 99),
        "tokens_per_second_max": max(r["tokens"] / r["seconds"] for r in rows),
    }


def accuracy_run(
    engine: Any, clips: Sequence[Clip], progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for i, clip in enumerate(clips):
        out = transcribe_timed(engine, int16_to_float(audio(clip)), "auto")
        rows.append(
            {"name": clip.name, "ref_language": clip.language, "reference": clip.text, "seconds": clip.seconds, **out}
        )  # fmt: skip
        if progress and (i + 1) % 50 == 0:
            progress(f"{i + 1}/{len(clips)}")
    return rows


def opus_uplink(pcm: Int16Array) -> Int16Array:
    """A clip as the gateway hears it from a device: the simulator's Opus packets (16 kHz, 60 ms
    frames), decoded by the gateway's decoder."""
    from voice_pipeline.common.audio import OpusDecoder
    from voice_pipeline.simulator.device import FRAME_MS, UPLINK_RATE, encode_clip

    decoder = OpusDecoder(UPLINK_RATE, FRAME_MS)
    return np.concatenate([decoder.decode(packet) for packet in encode_clip(pcm).frames])


def uplink_run(
    engine: Any, clips: Sequence[Clip], bare: Mapping[str, str], say: Callable[[str], None]
) -> dict[str, Any]:
    """WER/CER of the clips through the Opus uplink (default decoding), against `bare` (clip name
    -> the same decoding's transcript of the bare clip, from the accuracy run), and the
    transcripts the uplink changed."""
    rows = []
    for i, clip in enumerate(clips, 1):
        coded = transcribe_timed(engine, int16_to_float(opus_uplink(audio(clip))), "auto")["text"]
        rows.append(
            {
                "name": clip.name,
                "ref_language": clip.language,
                "reference": clip.text,
                "bare": bare[clip.name],
                "opus": coded,
            }
        )
        if i % 50 == 0:
            say(f"uplink {i}/{len(clips)}")
    changed = [r for r in rows if r["bare"] != r["opus"]]
    return {
        "clips": len(rows),
        "wer_en_bare": rate_of(rows, "en", "bare"),
        "wer_en_opus": rate_of(rows, "en", "opus"),
        "cer_zh_bare": rate_of(rows, "zh", "bare"),
        "cer_zh_opus": rate_of(rows, "zh", "opus"),
        "changed": len(changed),
        "changed_examples": [{k: r[k] for k in ("name", "reference", "bare", "opus")} for r in changed[:10]],
    }


def garbled_clips(clips: Sequence[Clip], seed: int = 14) -> list[tuple[str, F32, str]]:
    """(name, audio, device language) of audio whisper cannot transcribe sensibly, built from the
    test set and a seeded generator."""
    rng = np.random.default_rng(seed)
    by_name = {c.name: int16_to_float(audio(c)) for c in clips}
    english = [c.name for c in clips if c.language == "en"]
    long_en = sorted(english, key=lambda n: -len(by_name[n]))[:2]
    out: list[tuple[str, F32, str]] = [
        ("white noise 3 s (-20 dBFS)", (rng.standard_normal(48000) * 0.1).astype(np.float32), "auto"),
        ("white noise 6 s (-30 dBFS)", (rng.standard_normal(96000) * 0.03).astype(np.float32), "auto"),
    ]
    babble = sum(by_name[n][:48000] for n in english[:4] if len(by_name[n]) >= 48000)
    if isinstance(babble, np.ndarray):
        out.append(("4 voices at once 3 s", (babble / 4).astype(np.float32), "auto"))
    for name in ["zh_hello", "zh_story"]:
        out.append((f"synthetic Mandarin {name}, auto", by_name[name], "auto"))
        out.append((f"reversed {name}, auto", by_name[name][::-1].copy(), "auto"))
    for name in long_en:
        out.append((f"reversed English {name}, auto", by_name[name][::-1].copy(), "auto"))
        out.append((f"English {name} on a device set to zh", by_name[name], "zh"))
    # Not garbage: a phrase said four times, whose right transcript repeats. It checks that a real
    # repetition is not cut as a loop, and what a long utterance costs.
    out.append(("zh_hello said 4 times (17 s), auto", np.tile(by_name["zh_hello"], 4), "auto"))
    return out


def garbled_run(
    engine: Any, garbled: Sequence[tuple[str, F32, str]], repeats: int = 3
) -> list[dict[str, Any]]:
    """Each clip decoded `repeats` times: the least CPU of the runs is recorded (the decode is
    deterministic, so the spread is the neighbours' load: measured +-0.1 s on one clip)."""
    rows = []
    for name, pcm, lang in garbled:
        runs = [transcribe_timed(engine, pcm, lang) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["cpu_s"])
        rows.append({"name": name, "seconds": round(len(pcm) / 16000, 2), **best})
    return rows


LEAD_S = 0.3  # silence before each clip, as a device sends after `listen start`
TAIL_S = 1.5  # silence after it: more than any end-of-turn silence measured
PAUSE_BINS = ((150, 300), (300, 450), (450, 601))


def vad_probabilities(vad: Any, pcm: F32) -> list[float]:
    from voice_pipeline.vad.engine import VadState, split_windows

    windows, _ = split_windows(pcm)
    state = VadState()
    return [vad.step([state], [w])[0] for w in windows]


def segment_events(probabilities: Sequence[float], min_silence_ms: int) -> list[tuple[str, int]]:
    """(kind, sample position at which the segmenter fires it) for its starts and ends."""
    from voice_pipeline.vad.segmenter import Segmenter
    from voice_pipeline.vad.settings import VadSettings

    seg = Segmenter(VadSettings(min_silence_ms=min_silence_ms))
    events: list[tuple[str, int]] = []
    for p in probabilities:
        event = seg.push(p)
        if event is not None and event.kind in ("speech_start", "speech_end"):
            events.append((event.kind, seg.position))
    return events


def turn_ends(probabilities: Sequence[float], min_silence_ms: int) -> list[int]:
    """Sample positions at which the segmenter fires speech_end (the moment the turn ends)."""
    return [at for kind, at in segment_events(probabilities, min_silence_ms) if kind == "speech_end"]


def resumed_after_ms(events: Sequence[tuple[str, int]]) -> float | None:
    """From the first end of turn to the speech start the segmenter fires next: how long the
    gateway must hold a turn cut short for the rest of the speech to join it. None: no resume."""
    ends = [at for kind, at in events if kind == "speech_end"]
    if not ends:
        return None
    later = [at for kind, at in events if kind == "speech_start" and at > ends[0]]
    return (later[0] - ends[0]) * 1000 / 16000 if later else None


ENDPOINT_GROUPS = ("single sentence", "two sentences with a pause", "Chinese fixtures (espeak-ng)")


def endpoint_group(clip: Clip) -> str:
    if clip.language == "zh":
        return ENDPOINT_GROUPS[2]
    return ENDPOINT_GROUPS[1] if clip.pause_ms > 0 else ENDPOINT_GROUPS[0]


def endpoint_outcome(ends: Sequence[int], speech_end: int) -> tuple[bool, float | None]:
    """(truncated, delay ms): a turn is truncated when the segmenter ended it before the speech
    ended; otherwise the delay is from the end of speech to the first end-of-turn after it."""
    if not ends:
        return False, None
    if ends[0] < speech_end:
        return True, None
    return False, (ends[0] - speech_end) * 1000 / 16000


def endpointing_run(clips: Sequence[Clip], settings_ms: Sequence[int], threads: int = 1) -> dict[str, Any]:
    from voice_pipeline.models.registry import require_model
    from voice_pipeline.vad.engine import SileroVad

    vad = SileroVad(require_model("silero-vad") / "silero_vad.onnx", threads)
    lead, tail = np.zeros(int(LEAD_S * 16000), np.float32), np.zeros(int(TAIL_S * 16000), np.float32)
    prepared = []
    for clip in clips:
        speech = int16_to_float(audio(clip))
        # The fixture clips carry their own 0.3 s of silence before speech, as a device sends it.
        head = lead if clip.language == "en" else lead[:0]
        pcm = np.concatenate([head, speech, tail])
        prepared.append((clip, vad_probabilities(vad, pcm), len(head) + last_voiced_sample(speech)))
    table: dict[str, Any] = {}
    for ms in settings_ms:
        rows: dict[str, dict[str, Any]] = {}
        for group in ENDPOINT_GROUPS:
            chosen = [p for p in prepared if endpoint_group(p[0]) == group]
            if not chosen:
                continue
            events = [segment_events(probs, ms) for _, probs, _ in chosen]
            outcomes = [
                endpoint_outcome([at for kind, at in ev if kind == "speech_end"], end)
                for ev, (_, _, end) in zip(events, chosen, strict=True)
            ]
            delays = [d for t, d in outcomes if not t and d is not None]
            resumes = [resumed_after_ms(ev) for ev, (t, _) in zip(events, outcomes, strict=True) if t]
            cut = [c.name for (c, _, _), (t, _) in zip(chosen, outcomes, strict=True) if t]
            rows[group] = {
                "clips": len(chosen),
                "truncated": len(cut),
                "truncated_clips": cut,
                # Speech went on after each cut: the turn held until the reply plays takes it back
                # if this is shorter than the wait for the reply's first audio (None: never resumed).
                "resumed_after_ms": resumes,
                "never_ended": sum(1 for t, d in outcomes if not t and d is None),
                "delay_ms_p50": percentile(delays, 50) if delays else None,
                "delay_ms_p95": percentile(delays, 95) if delays else None,
            }
            if group == "two sentences with a pause":
                rows[group]["truncated_by_pause_ms"] = {
                    f"{lo}-{hi}": [
                        sum(
                            t
                            for (c, _, _), (t, _) in zip(chosen, outcomes, strict=True)
                            if lo <= c.pause_ms < hi
                        ),
                        sum(1 for c, _, _ in chosen if lo <= c.pause_ms < hi),
                    ]
                    for lo, hi in PAUSE_BINS
                }
        table[str(ms)] = rows
    return table


# The segmenter counts 32 ms windows: 300 ms ends a turn after 320 ms, 350 after 352, 400 after 416.
ENDPOINT_SETTINGS_MS = (160, 200, 250, 300, 350, 400)


# The gateway holds a turn the VAD ended until its reply's first audio (gateway/conversation.py):
# speech that resumes by then joins the turn. Modelled with the emulated providers' least time to
# first audio (LLM first token 400 ms + TTS first audio 250 ms); real providers take longer.
HOLD_S = 0.65


@dataclass(frozen=True)
class TurnCuts:
    """Where the gateway cuts a clip's first turn (sample positions): its start (speech start
    minus the pre-roll), where an early transcription would stop (None: the turn did not end in the
    pause it began at, so the gateway transcribes at the end) and where the turn ends; `dropped`:
    ASR runs thrown away (early runs at pauses inside the speech, and turns taken back because
    speech resumed within the hold), `resumed`: ends taken back."""

    start: int
    early: int | None
    end: int
    dropped: int
    resumed: int = 0


def voice_ends(pcm: F32, window: int = 512) -> list[int]:
    """After each VAD window of `pcm`, where the latest voiced 10 ms frame (common.audio) ended
    (0: none yet), as the gateway's utterance buffer tracks it."""
    from voice_pipeline.common.audio import VOICED_DBFS, VOICED_FRAME

    n = len(pcm) // VOICED_FRAME
    frames = pcm[: n * VOICED_FRAME].reshape(n, VOICED_FRAME)
    voiced = np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (VOICED_DBFS / 20)
    ends = np.maximum.accumulate(np.where(voiced, (np.arange(n) + 1) * VOICED_FRAME, 0))
    return [int(ends[(i + 1) * window // VOICED_FRAME - 1]) for i in range(len(pcm) // window)]


def turn_cuts(
    probabilities: Sequence[float],
    preroll: int,
    hold_s: float = HOLD_S,
    voiced_until: Sequence[int] | None = None,
    quiet_ms: int = 0,
) -> TurnCuts | None:
    """The first turn of a clip under the shipped VAD settings (pause and end-of-turn silence),
    as the gateway sees it (the VAD's decision point; the gateway's 60 ms chunks are not modelled),
    held `hold_s` after each end for speech to resume. With `voiced_until` (`voice_ends` of the
    clip), an early run also starts at `quiet_ms` of quiet after the last voiced frame
    (gateway.early_quiet_ms), and an early snapshot is the turn's by the gateway's own rule."""
    from voice_pipeline.gateway.early import snapshot_holds_turn
    from voice_pipeline.vad.segmenter import Segmenter
    from voice_pipeline.vad.settings import VadSettings

    seg = Segmenter(VadSettings())
    start: int | None = None
    early: int | None = None  # where the latest early snapshot ends
    runs = resumed = 0  # ASR runs begun (early ones, and at ends without one), ends taken back
    held: tuple[int, int | None] | None = None  # (end position, early stop) of the ended turn
    for i, p in enumerate(probabilities):
        event = seg.push(p)
        # Without levels every window counts as voiced: only the VAD's pause starts early runs.
        voice_end = voiced_until[i] if voiced_until is not None else seg.position
        if held is not None and seg.position - held[0] > hold_s * 16000:
            break  # no speech within the hold: the turn is over
        stale = early is None or voice_end > early  # voiced since the snapshot: start another
        if event is not None and event.kind == "speech_start":
            if start is None:
                start = max(0, event.sample - preroll)
            elif held is not None:
                held, resumed = None, resumed + 1  # the end was a pause: the turn goes on
        elif event is not None and event.kind == "speech_pause" and stale:
            early, runs = seg.position, runs + 1
        elif event is not None and event.kind == "speech_end" and start is not None:
            used = early is not None and snapshot_holds_turn(early, event.sample, voice_end)
            runs += not used
            held = (seg.position, early if used else None)
            early = None
        elif (
            quiet_ms
            and held is None
            and start is not None
            and voice_end > start
            and seg.position - voice_end >= quiet_ms * 16
            and stale
        ):
            early, runs = seg.position, runs + 1
    if held is None or start is None:
        return None
    return TurnCuts(start, held[1], held[0], runs - 1, resumed)


def early_run(engine: Any, clips: Sequence[Clip], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each clip's first turn transcribed as the gateway does with early transcription (the audio
    up to the pause, when the turn ended there) and without it (the audio up to the end)."""
    from voice_pipeline.gateway.settings import GatewaySettings
    from voice_pipeline.models.registry import require_model
    from voice_pipeline.vad.engine import SileroVad

    vad = SileroVad(require_model("silero-vad") / "silero_vad.onnx", 1)
    preroll, quiet_ms = GatewaySettings().preroll_ms * 16, GatewaySettings().early_quiet_ms
    lead, tail = np.zeros(int(LEAD_S * 16000), np.float32), np.zeros(int(TAIL_S * 16000), np.float32)
    rows = []
    for i, clip in enumerate(clips, 1):
        speech = int16_to_float(audio(clip))
        pcm = np.concatenate([lead if clip.language == "en" else lead[:0], speech, tail])
        cuts = turn_cuts(
            vad_probabilities(vad, pcm), preroll, voiced_until=voice_ends(pcm), quiet_ms=quiet_ms
        )
        if cuts is None:
            continue
        at_end = transcribe_timed(engine, pcm[cuts.start : cuts.end], "auto")
        early = (
            at_end if cuts.early is None else transcribe_timed(engine, pcm[cuts.start : cuts.early], "auto")
        )
        rows.append(
            {
                "name": clip.name,
                "ref_language": clip.language,
                "reference": clip.text,
                "early_used": cuts.early is not None,
                "early_dropped": cuts.dropped,
                "resumed": cuts.resumed,
                "early_s": round((cuts.end - (cuts.early or cuts.end)) / 16000, 3),
                "text_early": early["text"],
                "text_end": at_end["text"],
            }
        )
        if i % 50 == 0:
            say(f"early transcription {i}/{len(clips)}")
    return rows


def early_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """WER/CER with and without early transcription, and how often it was used."""
    used = [r for r in rows if r["early_used"]]
    return {
        "turns": len(rows),
        "early_used": len(used),
        "differ": sum(1 for r in used if r["text_early"] != r["text_end"]),
        "dropped": sum(r["early_dropped"] for r in rows),
        "resumed": sum(r["resumed"] for r in rows),
        "wer_en_early": rate_of(rows, "en", "text_early"),
        "wer_en_end": rate_of(rows, "en", "text_end"),
        "cer_zh_early": rate_of(rows, "zh", "text_early"),
        "cer_zh_end": rate_of(rows, "zh", "text_end"),
        "differing": [
            {k: r[k] for k in ("name", "text_early", "text_end")}
            for r in used
            if r["text_early"] != r["text_end"]
        ][:10],
    }


def _compact(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("name", "seconds", "reference", "text", "language", "tokens", "cpu_s", "wall_s", "detection")
    return [{k: r[k] for k in keep if k in r} for r in rows]


def run(
    limit: int | None = None,
    threads: int = 2,
    note: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every measurement of the ASR benchmark, as one record."""
    from voice_pipeline.bench import asr_set
    from voice_pipeline.bench.machine import git_commit, load_average, machine_info, now_iso

    say = progress or (lambda _m: None)
    root = asr_set.build(progress=say)
    clips, pauses = asr_set.load(root)
    english = [c for c in clips if c.language == "en"]
    if limit:
        english = english[:limit]
    chinese = [c for c in clips if c.language == "zh"]
    record: dict[str, Any] = {
        "kind": "asr-accuracy",
        "mode": "asr",
        "date": now_iso(),
        "commit": git_commit(),
        "machine": machine_info(),
        "note": note,
        "test_set": {
            "dir": str(root),
            "english": len(english),
            "chinese": len(chinese),
            "pause_clips": len(pauses),
            "english_seconds": [min(c.seconds for c in english), max(c.seconds for c in english)],
        },
        "threads": threads,
        "load_average": {"before": load_average()},
    }
    say("endpointing: Silero VAD + segmenter")
    record["endpointing"] = endpointing_run(english + pauses + chinese, ENDPOINT_SETTINGS_MS)
    record["decodings"] = {}
    for decoding in (default_decoding(), REFERENCE):
        say(f"accuracy, {decoding.name} decoding: {decoding.describe()}")
        engine = engine_for(decoding, threads)
        label = decoding.name
        rows = accuracy_run(engine, english + chinese, lambda m: say(f"{label} {m}"))  # noqa: B023
        record["decodings"][decoding.name] = {
            "describe": decoding.describe(),
            "summary": summarize(rows),
            "rows": _compact(rows),
            "load_average_after": load_average(),
        }
    say("early transcription: the first turn cut at its pause and at its end, default decoding")
    early_rows = early_run(engine_for(default_decoding(), threads), english + chinese, say)
    from voice_pipeline.gateway.settings import GatewaySettings
    from voice_pipeline.vad.settings import VadSettings

    vad = VadSettings()
    record["early"] = {
        "summary": early_summary(early_rows),
        "settings": {
            "pause_ms": vad.pause_ms,
            "min_silence_ms": vad.min_silence_ms,
            "hold_s": HOLD_S,
            "quiet_ms": GatewaySettings().early_quiet_ms,
        },
        "load_average_after": load_average(),
    }
    say("the device's Opus uplink: every clip encoded and decoded, default decoding")
    bare = {row["name"]: row["text"] for row in record["decodings"]["default"]["rows"]}
    record["uplink"] = uplink_run(engine_for(default_decoding(), threads), english + chinese, bare, say)
    garbled = garbled_clips(clips)
    record["garbled"] = {}
    for decoding in (PREVIOUS, unbounded(default_decoding()), default_decoding()):
        say(f"garbled audio, {decoding.name} decoding")
        engine = engine_for(decoding, threads)
        garbled_run(engine, garbled[:1], 1)  # warm-up: the first call pays one-time allocations
        record["garbled"][decoding.name] = {
            "describe": decoding.describe(),
            "rows": garbled_run(engine, garbled),
        }
    record["load_average"]["after"] = load_average()
    return record
