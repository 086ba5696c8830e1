"""What a benchmark record says about the machine: CPU flags and the runtimes' dispatch (issue 14)."""

from __future__ import annotations

from voice_pipeline.bench.docs import isa_summary
from voice_pipeline.bench.machine import parse_ct2_log
from voice_pipeline.common.cpus import cpu_flags

CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse4_1 avx avx2 fma avx512f avx512bw avx512_vnni sha_ni
"""

CT2_LOG = """[2026-11-29 12:58:02.030] [ctranslate2] [thread 1] [info] CPU: AuthenticAMD (SSE4.1=true, AVX=true, AVX2=true, AVX512=true)
[2026-11-29 12:58:02.030] [ctranslate2] [thread 1] [info]  - Selected ISA: AVX2
[2026-11-29 12:58:02.030] [ctranslate2] [thread 1] [info]  - Use Intel MKL: false
[2026-11-29 12:58:02.030] [ctranslate2] [thread 1] [info]  - SGEMM backend: DNNL (packed: false)
[2026-11-29 12:58:02.030] [ctranslate2] [thread 1] [info]  - GEMM_S8 backend: DNNL (packed: false, u8s8 preferred: true)
[2026-11-29 12:58:02.438] [ctranslate2] [thread 1] [info]  - Selected compute type: int8_float32
"""


def test_cpu_flags_keeps_the_isa_extensions_in_a_fixed_order() -> None:
    assert cpu_flags(CPUINFO) == ["sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]
    assert cpu_flags("processor: 0\n") == []


def test_the_ctranslate2_log_gives_the_selected_isa_and_backends() -> None:
    info = parse_ct2_log(CT2_LOG)
    assert info["selected_isa"] == "AVX2"
    assert info["cpu"].startswith("AuthenticAMD")
    assert info["gemm_s8_backend"].startswith("DNNL")
    assert info["compute_type"] == "int8_float32"
    assert parse_ct2_log("nothing here") == {}


def test_the_docs_name_flags_and_runtimes_when_the_record_has_them() -> None:
    machine = {
        "cpu_flags": ["sse4_1", "avx2", "avx512f", "avx512_vnni"],
        "runtimes": {
            "ctranslate2": {"version": "4.8.5", **parse_ct2_log(CT2_LOG)},
            "onnxruntime": {"version": "1.31.1", "provider_in_use": "CPUExecutionProvider"},
        },
    }
    text = isa_summary(machine)
    assert "avx2 avx512f avx512_vnni" in text
    assert "CTranslate2 4.8.5 ISA AVX2 (int8_float32, int8 GEMM DNNL)" in text
    assert "onnxruntime 1.31.1 CPUExecutionProvider" in text
    assert isa_summary({}) == ""  # older records: nothing invented
