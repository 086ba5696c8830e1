"""Gateway <-> stage replica transport: one persistent multiplexed WebSocket per pair.

`wire` is the frame codec, `server` serves a process's stage on `/v1/stream`, `client` is the
gateway's side of one connection (and the only keeper of a replica's load), `pool` the
connections to every replica of a stage, `replicas` the pure replica choice, `remote` the stage
clients (with the one "retry once on another replica" rule).

Imports `common` only: the stage host (`stagehost`) serves `server`, the gateway uses `remote`.
"""
