"""Device simulators: one xiaozhi device (`device`, `voice-pipeline simulate`) and fleets of them
(`fleet`) for the benchmarks. Speaks the device protocol (`gateway.protocol`); no server code."""
