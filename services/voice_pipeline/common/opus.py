"""What Opus encodes and decodes, for every check of audio parameters.

The device protocol's hello (`gateway.protocol`) and the TTS stage service's requests
(`transport.server`) both validate against these, so a device and a stage never disagree on what
is valid. No imports: the protocol module stays free of numpy.
"""

from __future__ import annotations

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
FRAME_DURATIONS = (10, 20, 40, 60, 120)  # ms; 120 is a multi-frame packet (libopus >= 1.2)
