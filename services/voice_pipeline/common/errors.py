"""One exception tree for the services; translated to a clear message at the edges.

Every error carries a message meant for a person: what was wrong and what to do about it.
"""

from __future__ import annotations


class VoicePipelineError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(VoicePipelineError):
    """A setting is missing or invalid."""


class ModelMissingError(VoicePipelineError):
    """A model file is absent or corrupt; the message names the command that fixes it."""

    def __init__(self, model: str, detail: str, fix: str = "voice-pipeline models install") -> None:
        super().__init__(f"model '{model}' is not available: {detail}. Run `{fix}` to install it.")
        self.model = model
        self.fix = fix


class ProviderUnavailableError(VoicePipelineError):
    """A provider (cloud API, local server, engine) could not serve the request; try the next one."""

    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(f"provider '{provider}' unavailable: {detail}")
        self.provider = provider


class OverloadedError(VoicePipelineError):
    """A bounded queue is full: the caller is told at once instead of waiting without bound."""

    def __init__(self, stage: str, queue_size: int) -> None:
        super().__init__(f"stage '{stage}' is overloaded (queue of {queue_size} is full); retry shortly")
        self.stage = stage
        self.queue_size = queue_size


class ProtocolError(VoicePipelineError):
    """A device sent something the protocol does not allow."""
