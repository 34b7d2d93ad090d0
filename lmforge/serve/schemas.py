"""OpenAI request fields: parsed, checked, and refused with errors in OpenAI's shape.

Every refusal is an `APIError` that names the field (`param`), so the official clients show
a useful message: {"error": {"message", "type", "param", "code"}}. Unknown fields and the
standard fields listed in IGNORED are accepted and ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..generate.sampling import DecodeOptions

# standard OpenAI fields accepted without effect (see docs/serve.md)
IGNORED = ("user", "presence_penalty", "frequency_penalty", "logit_bias", "best_of", "suffix",
           "service_tier", "store", "metadata", "parallel_tool_calls", "tools", "tool_choice",
           "functions", "function_call", "response_format", "modalities", "audio", "prediction",
           "reasoning_effort", "web_search_options")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "server_error"}
MAX_N = 16  # choices per prompt
MAX_STOP = 4  # stop strings, as OpenAI


class APIError(Exception):
    """An HTTP error with OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def bad(param: str, message: str) -> APIError:
    return APIError(400, message, param, "invalid_value" if param else None)


# --------------------------------------------------------------------------- field readers


def get_int(body: dict[str, Any], name: str, default: int | None, lo: int | None = None,
            hi: int | None = None) -> int | None:
    """An integer field (an integral float like 5.0 passes; booleans and strings do not)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(name, f"'{name}' must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise bad(name, f"'{name}' must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise bad(name, f"'{name}' must be <= {hi}, got {value}")
    return value


def get_float(body: dict[str, Any], name: str, default: float, lo: float, hi: float,
              lo_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(name, f"'{name}' must be a number, got {value!r}")
    if value < lo or (lo_open and value == lo) or value > hi:
        low = f"({lo:g}" if lo_open else f"[{lo:g}"
        raise bad(name, f"'{name}' must be in {low}, {hi:g}], got {value}")
    return float(value)


def get_bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(name, f"'{name}' must be true or false, got {value!r}")
    return value


def get_stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad("stop", f"'stop' must be a string or a list of strings, got {stop!r}")
    if len(stop) > MAX_STOP:
        raise bad("stop", f"'stop' holds at most {MAX_STOP} strings, got {len(stop)}")
    return [s for s in stop if s]


def include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise bad("stream_options", "'stream_options' must be an object")
    return get_bool(opts, "include_usage", False)


def check_ignored(body: dict[str, Any]) -> None:
    """The ignored fields still get their documented ranges checked (clients rely on 400s)."""
    for name in ("presence_penalty", "frequency_penalty"):
        get_float(body, name, 0.0, -2.0, 2.0)


# --------------------------------------------------------------------------- requests


@dataclass
class Limits:
    """The server's caps (command-line options) and the model's context."""

    max_prompt_tokens: int = 4096
    max_tokens: int = 1024  # cap on max_tokens per choice
    context: int | None = None  # prompt + new tokens must fit (KV-cache models)
    vocab_size: int = 0
    max_classify: int = 256  # texts per /v1/classify request


@dataclass
class GenerationRequest:
    """A completion or chat request, checked and tokenized, ready for the scheduler."""

    prompts: list[list[int]]  # token ids of each prompt
    options: DecodeOptions
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None  # None = off; k = the chosen token and k alternatives
    echo: list[str] = field(default_factory=list)  # completions: prompt texts to prepend
    stop_ids: list[int] = field(default_factory=list)


def sampling_options(body: dict[str, Any], max_tokens_names: tuple[str, ...], default_max: int | None,
                     prompt_len: int, limits: Limits, prompt_param: str) -> DecodeOptions:
    """max_tokens (checked against the cap and the context), temperature, top_p and the
    extras top_k, min_p, repetition_penalty, seed; stop strings."""
    name = next((n for n in max_tokens_names if body.get(n) is not None), max_tokens_names[0])
    room = limits.context - prompt_len if limits.context else None
    if prompt_len > limits.max_prompt_tokens or (room is not None and room < 1):
        cap = min(limits.max_prompt_tokens, (limits.context or 10**9) - 1)
        raise APIError(400, f"the prompt holds {prompt_len} tokens; this server accepts at most "
                       f"{cap} prompt tokens", prompt_param, "context_length_exceeded")
    default = min(x for x in (default_max, room, limits.max_tokens) if x is not None)
    max_tokens = get_int(body, name, default, 0 if name == "max_tokens" else 1, limits.max_tokens)
    if room is not None and max_tokens > room:
        raise APIError(400, f"this model's context is {limits.context} tokens: the prompt holds "
                       f"{prompt_len}, so '{name}' can be at most {room}, got {max_tokens}",
                       name, "context_length_exceeded")
    opts = DecodeOptions(
        max_new_tokens=max_tokens,
        temperature=get_float(body, "temperature", 1.0, 0.0, 2.0),
        top_p=get_float(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=get_int(body, "top_k", 0, 0, None),
        min_p=get_float(body, "min_p", 0.0, 0.0, 0.999),
        repetition_penalty=get_float(body, "repetition_penalty", 1.0, 0.0, 10.0, lo_open=True),
        seed=get_int(body, "seed", None, -2**63, 2**63 - 1),  # int64, as OpenAI
        stop=get_stop(body))
    opts.validate()
    return opts


def parse_prompts(value: Any, tokenizer: Any, vocab_size: int) -> tuple[list[list[int]], list[str]]:
    """`prompt` as a string, a list of strings, a list of token ids or a list of id lists.
    Returns token ids and texts of each prompt."""
    from ..generate.text import encode_prompt

    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise bad("prompt", "'prompt' must be a string, a list of strings, a list of token ids "
                            "or a list of token-id lists (non-empty)")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = [value]
    prompts, texts = [], []
    for i, p in enumerate(value):
        if isinstance(p, str):
            prompts.append(encode_prompt(tokenizer, p))
            texts.append(p)
        elif isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool)
                                               for t in p):
            if any(t < 0 or t >= vocab_size for t in p):
                raise bad("prompt", f"prompt {i}: token ids must be in [0, {vocab_size})")
            prompts.append(list(p))
            texts.append(tokenizer.decode(p))
        else:
            raise bad("prompt", f"prompt {i} must be a string or a non-empty list of token ids")
    return prompts, texts


def parse_completion(body: dict[str, Any], tokenizer: Any, limits: Limits) -> GenerationRequest:
    """POST /v1/completions."""
    if "prompt" not in body:
        raise bad("prompt", "'prompt' is required")
    check_ignored(body)
    prompts, texts = parse_prompts(body["prompt"], tokenizer, limits.vocab_size)
    longest = max(len(p) for p in prompts)
    opts = sampling_options(body, ("max_tokens",), 16, longest, limits, "prompt")
    return GenerationRequest(prompts, opts, n=get_int(body, "n", 1, 1, MAX_N),
                             stream=get_bool(body, "stream", False),
                             include_usage=include_usage(body),
                             logprobs=get_int(body, "logprobs", None, 0, 5),
                             echo=texts if get_bool(body, "echo", False) else [])


def parse_messages(value: Any) -> list[dict[str, str]]:
    """Chat messages: role + text content (a string, or a list of text parts)."""
    if not isinstance(value, list) or not value:
        raise bad("messages", "'messages' must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad(where, f"'{where}' must be an object with a string 'role'")
        role = "system" if m["role"] == "developer" else m["role"]
        if role not in ("system", "user", "assistant", "tool"):
            raise bad(f"{where}.role", f"'{where}.role' must be system, developer, user, assistant "
                                       f"or tool, got {m['role']!r}")
        content = m.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" \
                        or not isinstance(part.get("text"), str):
                    raise bad(f"{where}.content", f"'{where}.content': only text parts "
                                                  f"({{\"type\": \"text\", \"text\": ...}}) are supported")
                parts.append(part["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise bad(f"{where}.content", f"'{where}.content' must be a string or a list of text parts")
        out.append({"role": role, "content": content})
    return out


def parse_chat(body: dict[str, Any], template: Any, tokenizer: Any, limits: Limits,
               stop_ids: list[int], stop_strings: list[str]) -> GenerationRequest:
    """POST /v1/chat/completions: messages rendered with the run's chat template; the reply
    ends at the template's end-of-turn token (an id, or a string the tokenizer splits)."""
    check_ignored(body)
    messages = parse_messages(body.get("messages"))
    try:
        text = template.render(messages, add_generation_prompt=True)
    except Exception as err:  # noqa: BLE001 - a template may refuse a conversation (raise_exception)
        raise bad("messages", f"the chat template refused these messages: {err}") from None
    prompt = tokenizer.encode(text) or [tokenizer.bos_id or 0]
    opts = sampling_options(body, ("max_completion_tokens", "max_tokens"), None, len(prompt),
                            limits, "messages")
    opts.stop += [s for s in stop_strings if s not in opts.stop]
    top = get_int(body, "top_logprobs", None, 0, 20)
    want = get_bool(body, "logprobs", False)
    if top is not None and not want:
        raise bad("top_logprobs", "'top_logprobs' needs 'logprobs': true")
    return GenerationRequest([prompt], opts, n=get_int(body, "n", 1, 1, MAX_N),
                             stream=get_bool(body, "stream", False),
                             include_usage=include_usage(body),
                             logprobs=(top or 0) if want else None, stop_ids=stop_ids)


def parse_classify(body: dict[str, Any]) -> list[str]:
    """POST /v1/classify: {"input": "text" | ["text", ...]} ("texts" and "text" also accepted)."""
    name = next((k for k in ("input", "texts", "text") if k in body), "input")
    texts = body.get(name)
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad(name, f"'{name}' must be a string or a non-empty list of strings")
    return texts
