"""The device-facing gateway: xiaozhi WebSocket + OTA + status pages on one port.

- `app`: the FastAPI app and the device loop (`_serve_device`: hello, uplink budgets, timeouts);
  `conversation`: `Conversation`, one session's turns (VAD -> ASR -> LLM -> TTS -> paced audio);
  `early`: the work a conversation begins at a pause in speech (transcript, optionally the reply).
- `protocol` (wire messages and codes), `auth`/`ota`/`activation` (device identity), `admission`
  (per-device token buckets), `pacing`, `settings`, `web` (talk and status pages).
- `service`: `serve gateway` in distributed mode: the same app with the stages bound to
  `transport.remote` clients.

Imports `common`, `contract`, `turn`, `transport` (clients only) and `llm.settings`; no stage
implementation: all-in-one mode (`allinone`) hands it in-process stages from outside.
"""
