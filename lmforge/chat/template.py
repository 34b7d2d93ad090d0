"""Chat templates rendered exactly as transformers' `apply_chat_template(tokenize=False)`.

A chat template is a Jinja2 program shipped with a model (tokenizer_config.json
`chat_template`, a `chat_template.jinja` file, or GGUF `tokenizer.chat_template`). It turns a
list of messages into the one string the model was trained on. Templates come from the
internet, so they run in Jinja2's immutable sandbox, with the environment transformers gives
them (see transformers/utils/chat_template_utils.py):

- `trim_blocks` and `lstrip_blocks` (a `{% ... %}` tag eats its own newline and indent),
  the `loopcontrols` extension (`{% break %}`, `{% continue %}`), a no-op `{% generation %}`;
- `raise_exception(msg)`, `strftime_now(fmt)`, a `tojson` that does not HTML-escape;
- the tokenizer's named special tokens (`bos_token`, `eos_token`, ...) as variables.

One renderer for every user: `lmforge chat`, `generate --chat`, `Run.chat`, the SFT/DPO data
pipelines and the server's /v1/chat/completions.
"""

from __future__ import annotations

import json
import re
import warnings
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import ConfigError

# ChatML, the template transformers used as its default: what a run without one gets.
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# the tokenizer attributes transformers hands to every template (its SPECIAL_TOKENS_ATTRIBUTES)
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                      "cls_token", "mask_token")
# older names a message's reasoning is passed under; `reasoning_content` is the standard one
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# what follows an assistant reply in a rendered chat and ends the turn: a control token
_CONTROL_TOKEN = re.compile(r"<[^<>\s]{1,40}>|\[/?[A-Z_]{2,30}\]")


class ChatTemplateError(ConfigError):
    """A template that does not compile, or that refuses the messages (`raise_exception`)."""


def token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: a string, or an AddedToken dict.

    >>> token_text({"content": "<s>", "__type": "AddedToken"})
    '<s>'
    """
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------- the environment


def _plain(value: Any) -> Any:
    """Rebuild template inputs from plain JSON types, so a template can only reach the
    methods of str/int/float/list/dict (never those of a caller's rich object)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    """The compiled template, cached per source text."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for masks; rendering
        # only needs the body (transformers tracks offsets with it, lmforge's SFT finds spans
        # by rendering prefixes)
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        # Jinja's own tojson HTML-escapes '<', '>', '&' and "'": templates expect plain JSON
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    class SafeDict:
        # `dict(...)` inside a template without exposing the type object itself
        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
            return dict.fromkeys(*args, **kwargs)

    class SafeNamespace(jinja2.utils.Namespace):
        # namespace(...) refusing underscore names, so no dunder can be planted on it
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                SafeNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            SafeNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot set underscore attributes on a namespace ({name!r})")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now,
                       dict=SafeDict(), namespace=SafeNamespace)
    return env.from_string(source)


def _normalise(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Plain dict messages without None values (templates test for missing keys, and would
    print "None"), with reasoning also under its other names, as transformers passes them."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"message {i} is {type(message).__name__}, not a dict with "
                                    f"'role' and 'content'")
        message = {k: v for k, v in _plain(message).items() if v is not None}
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


# --------------------------------------------------------------------------- the template


class ChatTemplate:
    """A model's chat template with the special tokens it refers to."""

    def __init__(self, source: str, special_tokens: Mapping[str, Any] | None = None,
                 origin: str = "chat template") -> None:
        self.source, self.origin = source, origin
        self.special_tokens = {k: t for k, v in (special_tokens or {}).items()
                               if (t := token_text(v)) is not None}
        try:
            self._compiled = _compile(source)
        except Exception as err:  # jinja2.TemplateSyntaxError and friends
            line = getattr(err, "lineno", None)
            where = f", line {line}" if line else ""
            raise ChatTemplateError(f"{origin}{where}: the chat template does not compile "
                                    f"({err})") from None
        self.stop_strings = self._find_stop_strings()

    @classmethod
    def chatml(cls, special_tokens: Mapping[str, Any] | None = None) -> "ChatTemplate":
        return cls(CHATML, special_tokens, origin="ChatML (default)")

    @classmethod
    def from_tokenizer_config(cls, config: Mapping[str, Any], origin: str = "tokenizer_config.json",
                              template_file: str | Path | None = None) -> "ChatTemplate":
        """From a transformers tokenizer config; ChatML with a warning when it has no template.

        `template_file` (a chat_template.jinja beside it, transformers >= 4.43) wins over the
        config's `chat_template`, as in transformers."""
        special = {k: config.get(k) for k in SPECIAL_TOKEN_KEYS}
        extra = config.get("extra_special_tokens")
        if isinstance(extra, Mapping):  # model-specific named tokens (e.g. image_token)
            special.update(extra)
        source = config.get("chat_template")
        if template_file is not None and Path(template_file).is_file():
            source, origin = Path(template_file).read_text(encoding="utf-8"), str(template_file)
        if isinstance(source, list):  # several named templates: transformers uses "default"
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, Mapping)}
            source = named.get("default")
        if isinstance(source, Mapping):
            source = source.get("default")
        if not isinstance(source, str) or not source.strip():
            warnings.warn(f"{origin}: no chat template; using ChatML (<|im_start|>role ... "
                          f"<|im_end|>)", stacklevel=2)
            return cls.chatml(special)
        return cls(source, special, origin)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> "ChatTemplate":
        """The template of a run directory (tokenizer_config.json, or chat_template.jinja)."""
        run_dir = Path(run_dir)
        path = run_dir / "tokenizer_config.json"
        config: dict = {}
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        return cls.from_tokenizer_config(config, str(path), run_dir / "chat_template.jinja")

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
               tools: list[dict] | None = None, documents: list[dict] | None = None,
               **variables: Any) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...]).

        With `add_generation_prompt`, the header that opens an assistant turn is appended.
        Extra keyword variables (e.g. `enable_thinking=False`) reach the template and
        override the special tokens, as in transformers."""
        import jinja2

        if not messages:
            raise ChatTemplateError("cannot render an empty conversation")
        context = {**self.special_tokens, **_plain(variables)}
        try:
            return self._compiled.render(messages=_normalise(messages), tools=_plain(tools),
                                         documents=_plain(documents),
                                         add_generation_prompt=add_generation_prompt, **context)
        except jinja2.exceptions.TemplateError as err:
            raise ChatTemplateError(f"{self.origin}: the chat template refused the messages: "
                                    f"{err}") from None

    def _find_stop_strings(self) -> list[str]:
        """End-of-turn markers: the control token the template writes right after an
        assistant reply (e.g. <|im_end|>, <|eot_id|>), and the eos token."""
        stops: list[str] = []
        probe = "lmforge-probe-reply"
        try:
            text = self.render([{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": probe}])
        except ChatTemplateError:
            text = ""
        if probe in text:
            match = _CONTROL_TOKEN.match(text.split(probe, 1)[1].lstrip(" "))
            if match:
                stops.append(match.group(0))
        eos = self.special_tokens.get("eos_token")
        if eos and eos not in stops:
            stops.append(eos)
        return stops

    def __repr__(self) -> str:
        return f"ChatTemplate({self.origin!r}, stop_strings={self.stop_strings!r})"
