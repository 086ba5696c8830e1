"""The stage host: one process serving one model stage (`voice-pipeline serve vad|asr|llm|tts`).

Owns: `services` (the one table of stage services: name, settings class, models to install and
the builder of the served stage), `settings` (the process's settings classes, light enough for
`--help` and the operator image) and `app` (the FastAPI app around any one of them: /healthz,
/readyz, /metrics, /v1/stream, and uvicorn with a drain phase).

Imports: `assembly` (builds the stage exactly as all-in-one mode does), `cache` (Redis caches),
`transport.server` (the /v1/stream protocol), `common`. Nothing under a stage package imports
this package: stages do not know how they are hosted.
"""
