"""Provider emulators: local stand-ins for cloud LLM and TTS APIs with fixed latency profiles.

Capacity runs point the pipeline at these so that what is measured is this system's own cost
(docs/benchmark-workload.md): a cloud provider costs the node no CPU, an emulator costs little,
and it runs as its own process so its CPU is reported apart from the system's.
"""
