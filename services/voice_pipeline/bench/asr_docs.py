"""The "ASR accuracy and cost" section of docs/benchmarks.md, from a `bench-asr` record."""

from __future__ import annotations

from typing import Any


def wer_verdict(default_wer: float, reference_wer: float, tolerance: float = 0.01) -> bool:
    """Issue 14's rule: the default decoding may be at most 1 point (absolute) worse than the
    reference; a speed-up that costs more does not ship."""
    return default_wer - reference_wer <= tolerance + 1e-12


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def _load(values: list[float] | None) -> str:
    return " ".join(f"{v:g}" for v in values or []) or "-"


def accuracy_table(record: dict[str, Any]) -> list[str]:
    lines = [
        "| decoding | WER English | CER Chinese | exact (EN) | wrong language | CPU s per utterance mean / p95 "
        "| CPU s per audio s | latency p50 / p95 ms | load avg after | settings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, d in record["decodings"].items():
        s = d["summary"]
        lines.append(
            f"| {name} | {_pct(s['wer_en'])} | {_pct(s['cer_zh'])} | {s['exact_en']}/{s['en_utterances']} "
            f"| {s['wrong_language']} | {s['cpu_s_mean']:.3f} / {s['cpu_s_p95']:.3f} "
            f"| {s['cpu_per_audio_second']:.3f} | {_ms(s['wall_s_p50'])} / {_ms(s['wall_s_p95'])} "
            f"| {_load(d.get('load_average_after'))} | {d['describe']} |"
        )
    return lines


def garbled_table(record: dict[str, Any]) -> list[str]:
    runs = record.get("garbled") or {}
    if len(runs) < 2:
        return []
    names = list(runs)
    after_name = names[-1]
    head = " | ".join(f"CPU s / tokens {n}" for n in names)
    lines = [
        f"| clip | seconds | {head} | language {after_name} | transcript {after_name} |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    for i, a in enumerate(runs[after_name]["rows"]):
        text = a["text"].replace("|", "/")
        text = text if len(text) <= 60 else text[:57] + "..."
        cells = " | ".join(
            f"{runs[n]['rows'][i]['cpu_s']:.2f} / {runs[n]['rows'][i]['tokens']}" for n in names
        )
        lines.append(f"| {a['name']} | {a['seconds']:g} | {cells} | {a['language']} | {text} |")
    totals = " | ".join(
        f"**{sum(r['cpu_s'] for r in runs[n]['rows']):.2f}** / {sum(r['tokens'] for r in runs[n]['rows'])}"
        for n in names
    )
    lines.append(f"| **total** | | {totals} | | |")
    return lines


def resume_cell(rows: dict[str, dict[str, Any]]) -> str:
    """The longest wait from a cut to the resumed speech, over every group (older records: -)."""
    if not any(row["truncated"] for row in rows.values()):
        return "no cuts"
    if any("resumed_after_ms" not in row for row in rows.values()):
        return "-"
    resumes = [r for row in rows.values() for r in row["resumed_after_ms"]]
    never = sum(1 for r in resumes if r is None)
    longest = max((r for r in resumes if r is not None), default=0.0)
    return f"{longest:.0f}" + (f" ({never} never)" if never else "")


def endpointing_table(record: dict[str, Any]) -> list[str]:
    table = record.get("endpointing") or {}
    if not table:
        return []
    lines = [
        "| end-of-turn silence | single sentences cut short | delay end of speech -> turn end p50 / p95 ms "
        "| two-sentence clips cut at the pause (pause 150-300 / 300-450 / 450-600 ms) "
        "| Chinese fixtures cut short | speech resumes after a cut within (max ms) |",
        "|---|---|---|---|---|---|",
    ]
    for ms, rows in table.items():
        single = rows["single sentence"]
        pair = rows["two sentences with a pause"]
        zh = rows.get("Chinese fixtures (espeak-ng)")
        zh_cell = (
            "-"
            if zh is None
            else f"{zh['truncated']}/{zh['clips']} {' '.join(zh['truncated_clips'])}".strip()
        )
        bins = " / ".join(f"{cut}/{n}" for cut, n in pair.get("truncated_by_pause_ms", {}).values())
        delay = (
            "-"
            if single["delay_ms_p50"] is None
            else f"{single['delay_ms_p50']:.0f} / {single['delay_ms_p95']:.0f}"
        )
        lines.append(
            f"| {ms} ms | {single['truncated']}/{single['clips']} | {delay} "
            f"| {pair['truncated']}/{pair['clips']} ({bins}) | {zh_cell} | {resume_cell(rows)} |"
        )
    return lines


def early_lines(record: dict[str, Any]) -> list[str]:
    early = (record.get("early") or {}).get("summary")
    if not early:
        return []
    # Records before 2026-11-30 ran with the settings of then and no hold.
    settings = (record.get("early") or {}).get("settings") or {"pause_ms": 128, "min_silence_ms": 350}
    hold = (
        f" A turn is held {settings['hold_s'] * 1000:.0f} ms after its end (the emulated providers' least "
        f"time to first audio): speech that resumes by then joins it ({early.get('resumed', 0)} turns)."
        if "hold_s" in settings
        else ""
    )
    quiet = (
        f" or, sooner where the room is quiet, at {settings['quiet_ms']} ms of audio below -40 dBFS after the "
        "last voiced 10 ms frame (gateway `early_quiet_ms`)"
        if settings.get("quiet_ms")
        else ""
    )
    lines = [
        "### Early transcription: accuracy of the transcript started at the pause",
        "",
        f"At `pause_ms` of silence (VAD setting, {settings['pause_ms']} ms){quiet} the gateway starts ASR on "
        f"the utterance so far; when the turn then ends in that same silence (`min_silence_ms`, "
        f"{settings['min_silence_ms']} ms), that transcript is the turn's and the ASR time hides inside the "
        f"rest of the wait.{hold} Each clip's first turn (Silero + the segmenter, the gateway's 300 ms "
        "pre-roll) transcribed both ways with the default decoding:",
        "",
        "| | WER English | CER Chinese |",
        "|---|---|---|",
        f"| cut at the pause (what ships) | {_pct(early['wer_en_early'])} | {_pct(early['cer_zh_early'])} |",
        f"| cut at the end of the turn | {_pct(early['wer_en_end'])} | {_pct(early['cer_zh_end'])} |",
        "",
        f"{early['early_used']} of {early['turns']} turns ended with nothing said after their early "
        f"snapshot (the others were transcribed again at their end); {early['differ']} of those transcripts "
        f"differ from the one cut at the end. The cost: {early['dropped']} early transcriptions thrown away "
        "because speech went on after a pause (an ASR run each)" + (":" if early["differing"] else "."),
    ]
    if early["differing"]:
        lines += ["", "| clip | at the pause | at the end |", "|---|---|---|"]
        lines += [f"| {d['name']} | {d['text_early']} | {d['text_end']} |" for d in early["differing"]]
    return lines


def uplink_lines(record: dict[str, Any]) -> list[str]:
    uplink = record.get("uplink")
    if not uplink:
        return [
            "### The device's Opus uplink",
            "",
            "Not measured in this record (a run from before the measurement existed).",
        ]
    lines = [
        "### The device's Opus uplink",
        "",
        "Every device sends Opus (16 kHz, 60 ms frames; the xiaozhi firmware encodes with complexity 5, "
        "as the simulator does). The same clips encoded as the simulator encodes them and decoded as the "
        "gateway does, default decoding, against the bare clips:",
        "",
        "| | WER English | CER Chinese |",
        "|---|---|---|",
        f"| bare clip | {_pct(uplink['wer_en_bare'])} | {_pct(uplink['cer_zh_bare'])} |",
        f"| through the Opus uplink | {_pct(uplink['wer_en_opus'])} | {_pct(uplink['cer_zh_opus'])} |",
        "",
        f"The uplink changed {uplink['changed']} of {uplink['clips']} transcripts"
        + (":" if uplink["changed_examples"] else "."),
    ]
    if uplink["changed_examples"]:
        lines += ["", "| reference | bare clip | through Opus |", "|---|---|---|"]
        lines += [f"| {d['reference']} | {d['bare']} | {d['opus']} |" for d in uplink["changed_examples"]]
    return lines


def asr_lines(record: dict[str, Any] | None, machine_text: str = "") -> list[str]:
    if record is None:
        return ["## ASR accuracy and cost", "", "No `make bench-asr` run recorded yet.", ""]
    ts = record["test_set"]
    lines = [
        "## ASR accuracy and cost (make bench-asr)",
        "",
        f"Run of {record['date']}, commit {record['commit']}, on {machine_text or record['machine']['cpu']}; "
        f"{record['threads']} CTranslate2 threads, one utterance per call; load average (1/5/15 min) "
        f"before {_load(record['load_average'].get('before'))}, after {_load(record['load_average'].get('after'))}. "
        "The machine is shared with other work, so latency (wall time) is contended; CPU is process CPU "
        "time (all threads), which the neighbours' load moves far less.",
        "",
        f"Test set (built offline, cached in `$VP_HOME/asr-testset/<key>`): {ts['english']} English "
        f"utterances of {ts['english_seconds'][0]:.1f}-{ts['english_seconds'][1]:.1f} s spoken by the Piper "
        "voice (en_US-joe-medium) from `services/voice_pipeline/data/asr_testset_en.txt` (numbers, names, "
        f"questions, commands), {ts['chinese']} Chinese clips (tests/fixtures, espeak-ng). Both decodings "
        "run under `auto` language among zh/en, like a default device. WER/CER normalisation: "
        "`bench/asr_text.py` (case and punctuation dropped, digits read as words on both sides, no "
        "contraction expansion, no traditional/simplified folding).",
        "",
        *accuracy_table(record),
        "",
    ]
    decodings = record["decodings"]
    if "default" in decodings and "reference" in decodings:
        d = decodings["default"]["summary"]["wer_en"]
        r = decodings["reference"]["summary"]["wer_en"]
        verdict = "within" if wer_verdict(d, r) else "NOT within"
        lines += [
            f"Default WER - reference WER = {(d - r) * 100:+.1f} points: {verdict} the 1-point budget.",
            "",
        ]
    early = early_lines(record)
    if early:
        lines += [*early, ""]
    lines += [*uplink_lines(record), ""]
    garbled = garbled_table(record)
    if garbled:
        lines += [
            "### Bad audio: CPU per utterance before and after the decode bounds",
            "",
            "`previous` is the decoding before issue 14 (10 s window, repetition penalty 1.1, no-repeat "
            "4-grams, a fixed cap of 48 tokens); `default` is the default now (duration cap, loop stop, "
            "language fallback), `default unbounded` the same decoding without those three bounds. "
            "Same engine, same clips, same process; CPU is the least of 3 runs of each clip (the "
            "decode is deterministic, the spread is the machine's other load), tokens are those "
            "decoded (the cost), before a loop's repeats are cut from the transcript.",
            "",
            *garbled,
            "",
        ]
    endpoint = endpointing_table(record)
    if endpoint:
        lines += [
            "### Endpointing: the silence that ends a turn",
            "",
            "Silero VAD + the segmenter over every English clip (0.3 s of silence before, 1.5 s after) "
            "and over two-sentence clips joined by a seeded 150-600 ms pause, and over the espeak-ng "
            "Mandarin fixtures (their own 0.3 s lead; zh_hello has a comma pause, and it is a clip of "
            "the fleet workload). The segmenter counts 32 ms windows: 200 ms waits 224, 300 waits 320, "
            "350 waits 352, 400 waits 416. A turn is cut short when "
            "the segmenter ends it before the last 10 ms frame above -40 dBFS; the delay runs from that "
            "frame to the moment the segmenter ends the turn. The last column is the longest wait, over "
            "all groups, from a cut to the speech start the segmenter fires next: the gateway holds a "
            "turn until its reply's first audio (at least 650 ms with the emulated providers), so a cut "
            "whose speech resumes sooner loses nothing; it costs a wasted transcription.",
            "",
            *endpoint,
            "",
        ]
    return lines
