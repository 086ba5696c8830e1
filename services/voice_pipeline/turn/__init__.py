"""One conversational turn's own logic, apart from any stage: the history window sent to the LLM
(`history.ChatHistory`), the cutting of the streamed reply into sentences for TTS (`sentences`)
and the reply's emotion for the device (`emotion`). Pure code, no I/O.

Owned here, used by the gateway's `Conversation` (one per device session), the cache preload
(it plays first turns ahead) and the simulator. Imports `common` and `llm.settings` (the
`HistorySettings` section) only.
"""
