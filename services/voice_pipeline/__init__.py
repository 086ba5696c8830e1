"""voice-pipeline: real-time voice assistants for fleets of small devices.

The house, bottom up (each layer imports only the ones above it in this list; the unit test
`tests/unit/test_import_graph.py` fails on any import cycle between packages or modules):

- `contract`: names shared with the operator (stages, metrics, labels, config keys).
- `common`: what every stage and process shares: the stage Protocols (`stages`), audio and Opus,
  settings helpers, metrics, errors, and the one breaker, admission controller and batcher.
- `models`: installs and finds the offline models.
- `vad`, `asr`, `llm`, `tts`: the model stages, each an in-process implementation of its Protocol
  (engine adapters + stage). They import only `common`, `contract` and `models`.
- `turn`: one conversational turn's pure logic (chat history, sentence splitting, emotion).
- `cache`: decorators that wrap a built stage (Redis or in-process stores).
- `assembly`: builds each stage (and its cache) for a process, all-in-one and stage services alike.
- `transport`: the multiplexed gateway <-> stage replica WebSocket (codec, server, client, pools).
- `gateway`: the device-facing app (xiaozhi protocol, OTA, the per-session `Conversation`).
- `stagehost`: one process serving one stage (`serve vad|asr|llm|tts`); `allinone`: every stage
  in the gateway's process (`serve`); `serve_commands`, `cli`: the command line.
- Tools beside the pipeline: `simulator`, `emulators`, `bench`, `devcluster`, `docs_tables`.
"""

__version__ = "0.1.0"
