"""The chat-template renderer gives transformers' apply_chat_template(tokenize=False) output."""

from __future__ import annotations

import json

import pytest

from lmforge.chat import CHATML, ChatTemplate, ChatTemplateError
from lmforge.config import ConfigError

from .templates import ALL, LLAMA3, MISTRAL, QWEN, SMOLLM2

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models  # noqa: E402

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}

CHATS = {
    "one turn": [{"role": "user", "content": "What is the capital of France?"}],
    "system": [{"role": "system", "content": "  You are terse.  "},
               {"role": "user", "content": "Hi & <b>bye</b> 'quoted' \"double\" — é 🤖"}],
    "multi-turn": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Name a colour."},
                   {"role": "assistant", "content": "Blue."},
                   {"role": "user", "content": "Another?"},
                   {"role": "assistant", "content": "Red.", "tool_calls": None},
                   {"role": "user", "content": "  And one more, with spaces  \n"}],
    "no system, two turns": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                             {"role": "user", "content": "c"}],
}


def hf_tokenizer(template: str | None):
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "hello"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **SPECIAL)


def reference(template: str, messages, **kwargs) -> str:
    return hf_tokenizer(template).apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.mark.parametrize("name", ["smollm2", "llama3", "qwen", "controls"])
@pytest.mark.parametrize("chat", list(CHATS))
@pytest.mark.parametrize("gen", [False, True])
def test_same_text_as_transformers(name, chat, gen):
    template = ChatTemplate(ALL[name], SPECIAL)
    ours = template.render(CHATS[chat], add_generation_prompt=gen)
    assert ours == reference(ALL[name], CHATS[chat], add_generation_prompt=gen)


def test_tools_and_tool_calls_through_tojson():
    tools = [{"type": "function", "function": {"name": "weather", "description": "<temp> & 'rain'",
                                               "parameters": {"city": {"type": "string"}}}}]
    chat = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]}]
    ours = ChatTemplate(QWEN, SPECIAL).render(chat, tools=tools, add_generation_prompt=True)
    assert ours == reference(QWEN, chat, tools=tools, add_generation_prompt=True)
    assert '"<temp> & \'rain\'"' in ours  # no HTML escaping


def test_prefixes_render_as_prefixes():
    # SFT masking renders messages[:i] to find the assistant spans: each prefix must start the full text
    template = ChatTemplate(SMOLLM2, SPECIAL)
    chat = CHATS["multi-turn"]
    full = template.render(chat)
    for i in range(1, len(chat)):
        assert full.startswith(template.render(chat[:i]))


def test_raise_exception_is_one_clear_error():
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception, match="roles must alternate"):
        reference(MISTRAL, bad)
    with pytest.raises(ChatTemplateError, match="refused the messages: Conversation roles must alternate"):
        ChatTemplate(MISTRAL, SPECIAL).render(bad)
    good = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]
    assert ChatTemplate(MISTRAL, SPECIAL).render(good) == reference(MISTRAL, good)


def test_stop_strings_are_the_end_of_turn_tokens():
    assert ChatTemplate(SMOLLM2, {"eos_token": "<|im_end|>"}).stop_strings == ["<|im_end|>"]
    assert ChatTemplate(CHATML, {"eos_token": "<|endoftext|>"}).stop_strings == ["<|im_end|>", "<|endoftext|>"]
    assert ChatTemplate(LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
                        ).stop_strings == ["<|eot_id|>", "<|end_of_text|>"]
    assert ChatTemplate(MISTRAL, SPECIAL).stop_strings == ["</s>"]


def test_from_run_reads_what_transformers_saves(tmp_path):
    hf_tokenizer(QWEN).save_pretrained(tmp_path)  # tokenizer_config.json and/or chat_template.jinja
    template = ChatTemplate.from_run(tmp_path)
    assert template.render(CHATS["system"], add_generation_prompt=True) == \
        reference(QWEN, CHATS["system"], add_generation_prompt=True)
    assert template.special_tokens["eos_token"] == "</s>"
    assert template.stop_strings == ["<|im_end|>", "</s>"]


def test_config_with_added_token_dicts(tmp_path):
    config = {"chat_template": MISTRAL, "bos_token": {"content": "<s>", "__type": "AddedToken"},
              "eos_token": "</s>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    text = ChatTemplate.from_run(tmp_path).render([{"role": "user", "content": "x"}])
    assert text == "<s>[INST] x [/INST]"


def test_run_without_template_gets_chatml_with_a_warning(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    with pytest.warns(UserWarning, match="no chat template; using ChatML"):
        template = ChatTemplate.from_run(tmp_path)
    chat = CHATS["one turn"]
    assert template.render(chat, add_generation_prompt=True) == reference(CHATML, chat, add_generation_prompt=True)
    with pytest.warns(UserWarning):
        ChatTemplate.from_run(tmp_path / "missing")  # no tokenizer_config.json at all


def test_bad_templates_and_configs_are_config_errors(tmp_path):
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}{{ m.content }")
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="tokenizer_config.json: not valid JSON"):
        ChatTemplate.from_run(tmp_path)
    with pytest.raises(ChatTemplateError, match="empty conversation"):
        ChatTemplate(SMOLLM2).render([])


def test_sandbox_blocks_escapes():
    with pytest.raises(Exception):
        ChatTemplate("{{ messages.__class__.__mro__ }}").render(CHATS["one turn"])
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{% set ns = namespace(_x=1) %}").render(CHATS["one turn"])
