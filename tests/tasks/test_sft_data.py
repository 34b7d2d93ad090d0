"""SFT data: the four shapes, bad input with file:line, assistant-only loss masks, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.chat import ChatTemplate
from lmforge.config import ConfigError
from lmforge.tasks.sft_batches import BucketSampler, collate_lm
from lmforge.tasks.sft_data import encode_conversation, encode_split, read_conversations
from lmforge.tokenizers import train_tokenizer

from .sft_helpers import ALPHABET, write_jsonl

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"}]


def test_four_shapes_are_detected(tmp_path):
    rows = {
        "messages": {"messages": CHAT[1:3]},
        "sharegpt": {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        "alpaca": {"instruction": "hi", "input": "", "output": "hello"},
        "prompt_completion": {"prompt": "hi", "completion": "hello"},
    }
    for name, row in rows.items():
        convs = read_conversations(write_jsonl(tmp_path / f"{name}.jsonl", [row, row]))
        assert [c.messages for c in convs] == [CHAT[1:3]] * 2, name
        assert convs[1].where.endswith(f"{name}.jsonl:2")
    alpaca = {"instruction": "Translate", "input": "Hund", "output": "dog"}
    (tmp_path / "a.json").write_text(json.dumps([alpaca, alpaca], indent=1))
    convs = read_conversations(tmp_path / "a.json")
    assert convs[0].messages[0]["content"] == "Translate\n\nHund"
    assert convs[1].where.endswith("a.json:7")  # the line the second object starts on


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "bot", "content": "x"}]}, r"bad.jsonl:2: turn 1 has unknown role 'bot'"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]},
     r"bad.jsonl:2: turn 1 \(user\) has no 'content'"),
    ({"messages": [{"role": "user", "content": "x"}]}, r"bad.jsonl:2: the conversation has no assistant turn"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, r"bad.jsonl:2: turn 1 has unknown role 'robot'"),
    ({"foo": 1}, r"bad.jsonl:2: unknown record shape"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    good = {"messages": CHAT[1:3]}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(ConfigError, match=message):
        read_conversations(path)


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ConfigError, match="empty.jsonl: the file is empty"):
        read_conversations(tmp_path / "empty.jsonl")


def test_loss_mask_covers_every_assistant_reply_and_its_end_of_turn():
    tok = train_tokenizer("char", [ALPHABET])
    template = ChatTemplate.chatml()
    enc = encode_conversation(template, tok, CHAT, "x:1", max_len=1000)
    text = tok.decode(enc.ids, skip_special=False)
    assert text == template.render(CHAT)
    learned = tok.decode(enc.ids[enc.loss_mask], skip_special=False)
    assert learned == "hello<|im_end|>\nciao<|im_end|>\n"
    everything = encode_conversation(template, tok, CHAT, "x:1", max_len=1000, train_on_prompt=True)
    assert everything.loss_mask.all()
    short = encode_conversation(template, tok, CHAT, "x:1", max_len=20)
    assert short.truncated and len(short.ids) == 21


def test_a_template_from_the_base_is_used():
    tok = train_tokenizer("char", [ALPHABET])
    template = ChatTemplate("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                            "{% if add_generation_prompt %}[assistant] {% endif %}")
    enc = encode_conversation(template, tok, CHAT[1:3], "x:1", max_len=1000)
    assert tok.decode(enc.ids) == "[user] hi\n[assistant] hello\n"
    assert tok.decode(enc.ids[enc.loss_mask]) == "hello\n"


def test_truncation_is_counted_and_empty_examples_dropped():
    tok = train_tokenizer("char", [ALPHABET])
    from lmforge.tasks.sft_data import Conversation

    long = Conversation([{"role": "user", "content": "x" * 100}, {"role": "assistant", "content": "y"}], "f:1")
    fits = Conversation(CHAT[1:3], "f:2")
    split = encode_split([long, fits], ChatTemplate.chatml(), tok, 80, False, None)
    assert (split.truncated, split.dropped, len(split.examples)) == (1, 1, 1)


def test_bucket_sampler_resumes_exactly_and_collate_shifts_the_mask():
    lengths = np.random.default_rng(0).integers(3, 40, size=37)
    a = BucketSampler(lengths, 4, seed=3)
    seen = [a.next().tolist() for _ in range(15)]  # crosses an epoch boundary (10 batches)
    b = BucketSampler(lengths, 4, seed=3)
    for _ in range(6):
        b.next()
    c = BucketSampler(lengths, 4, seed=3)
    c.load_state_dict(b.state_dict())
    assert [c.next().tolist() for _ in range(9)] == seen[6:]
    assert sorted(sum(seen[:10], [])) == list(range(37))  # one epoch = every example once
    spread = np.mean([np.ptp(lengths[np.array(s)]) for s in seen[:10]])
    assert spread < np.ptp(lengths) / 2  # bucketed: similar lengths together
    tok = train_tokenizer("char", [ALPHABET])
    enc = encode_conversation(ChatTemplate.chatml(), tok, CHAT[1:3], "x:1", max_len=100)
    x, y = collate_lm([enc], pad_id=0)
    assert (x[0] == torch_tensor(enc.ids[:-1])).all()
    targets = y[0][y[0] != -100]
    assert tok.decode(targets.tolist(), skip_special=False) == "hello<|im_end|>\n"


def torch_tensor(a):
    import torch

    return torch.as_tensor(a)


def test_byte_level_bpe_with_special_tokens_masks_exactly():
    """A SmolLM2-like tokenizer (byte-level BPE, ChatML markers as added tokens): the learned
    tokens are each reply and its end-of-turn marker, leading spaces and newlines included."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from lmforge.tokenizers import Tokenizer

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["hello there, how are you? fine thanks.\n"] * 50, trainer)
    tok = Tokenizer(backend, "hf")
    chat = [{"role": "user", "content": "how are you?"},
            {"role": "assistant", "content": "  fine,\nthanks "},
            {"role": "user", "content": "hello"}, {"role": "assistant", "content": "there"}]
    enc = encode_conversation(ChatTemplate.chatml(), tok, chat, "x:1", max_len=1000)
    assert tok.decode(enc.ids[enc.loss_mask], skip_special=False) == \
        "  fine,\nthanks <|im_end|>\nthere<|im_end|>\n"
