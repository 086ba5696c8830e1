"""Per-session chat history with a bounded window: what the LLM is sent with each turn."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.llm.settings import HistorySettings


@dataclass
class ChatHistory:
    system_prompts: dict[str, str]
    max_turns: int = 6
    max_chars: int = 2000
    turns: deque[tuple[str, str]] = field(default_factory=deque)

    @classmethod
    def from_settings(cls, settings: HistorySettings) -> ChatHistory:
        return cls(dict(settings.system_prompts), settings.history_turns, settings.history_chars)

    def messages(self, user_text: str, language: str = "") -> list[ChatMessage]:
        """System prompt, the most recent turns that fit the budget, then the new user turn.

        `language` is what ASR heard; it picks the system prompt (written in that language)."""
        kept: list[tuple[str, str]] = []
        budget = self.max_chars
        for user, assistant in reversed(self.turns):
            budget -= len(user) + len(assistant)
            if budget < 0 or len(kept) >= self.max_turns:
                break
            kept.append((user, assistant))
        prompt = self.system_prompts.get(language) or self.system_prompts.get("en") or ""
        messages = [ChatMessage("system", prompt)]
        for user, assistant in reversed(kept):
            messages += [ChatMessage("user", user), ChatMessage("assistant", assistant)]
        messages.append(ChatMessage("user", user_text))
        return messages

    def commit(self, user_text: str, spoken_reply: str) -> None:
        """Record a turn as the user heard it: an interrupted reply is kept as far as it was spoken,
        so the model knows what the user actually heard; an unanswered turn is dropped."""
        if not spoken_reply.strip():
            return
        self.turns.append((user_text, spoken_reply))
        while len(self.turns) > max(self.max_turns, 1):
            self.turns.popleft()

    @property
    def is_fresh(self) -> bool:
        """No earlier turns: the reply depends on this turn alone (what a semantic cache may reuse)."""
        return not self.turns
