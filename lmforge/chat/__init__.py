"""Chat: the chat-template renderer every chat user shares (see template.py)."""

from .template import CHATML, ChatTemplate, ChatTemplateError

__all__ = ["CHATML", "ChatTemplate", "ChatTemplateError"]
