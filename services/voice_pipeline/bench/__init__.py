"""Capacity benchmarks: the device-fleet search behind `make bench`, its records, and the
capacity report (`voice-pipeline report`)."""
