"""Gateway <-> stage replica transport: one persistent multiplexed WebSocket per pair.

`wire` is the frame codec, `server` serves a process's stage on `/v1/stream`, `client` is the
gateway's side of one connection, `replicas` the pure replica choice, `remote` the stage clients.
"""
