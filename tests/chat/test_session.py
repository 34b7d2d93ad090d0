"""Chat replies equal transformers' (apply_chat_template + greedy generate ending at the
end-of-turn token); the session drops the oldest turns when the context is full; the CLI
answers piped lines, honours /reset and /exit; generate --chat prints the same reply."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from .helpers import CHATML, hf_model, tokenizer, transformers, write_chat_run

from lmforge.chat.session import ChatError, ChatSession  # noqa: E402
from lmforge.cli import main  # noqa: E402
from lmforge.generate import DecodeOptions  # noqa: E402
from lmforge.run import load_run  # noqa: E402

GREEDY = dict(temperature=0, max_new_tokens=10)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tok):
    hf = hf_model(tok.get_vocab_size(), max_len=256)
    return write_chat_run(tmp_path_factory.mktemp("chat") / "run", hf, tok), hf


def _hf_reply(hf, tok, messages, new=10) -> list[int]:
    """transformers: render + tokenize with the template, greedy until <|im_end|>."""
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=CHATML,
                                                eos_token="<|im_end|>", pad_token="<|im_end|>")
    ids = fast.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                   return_dict=True)["input_ids"]
    out = hf.generate(ids, max_new_tokens=new, do_sample=False, eos_token_id=2, pad_token_id=2)
    reply = out[0, ids.shape[1]:].tolist()
    return reply[:reply.index(2)] if 2 in reply else reply


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "To be, or not?"}]


def test_reply_equals_transformers(chat_run, tok):
    run_dir, hf = chat_run
    run = load_run(run_dir, device="cpu")
    assert run.chat(MESSAGES, **GREEDY) == tok.decode(_hf_reply(hf, tok, MESSAGES))


def test_reply_ends_at_the_end_of_turn_token(tmp_path, tok):
    free = hf_model(tok.get_vocab_size())
    first = _hf_reply(free, tok, MESSAGES, new=6)
    rigged = hf_model(tok.get_vocab_size(), stop_after=first[3])
    expected = _hf_reply(rigged, tok, MESSAGES, new=10)
    assert 0 < len(expected) < 10  # transformers stopped early at <|im_end|>
    run = load_run(write_chat_run(tmp_path / "run", rigged, tok), device="cpu")
    assert run.chat_template.stop_strings == ["<|im_end|>"]
    reply = run.chat(MESSAGES, **GREEDY)
    assert reply == tok.decode(expected)
    assert run.tokenizer.encode(reply) == expected


def test_full_context_drops_the_oldest_turns(tmp_path, tok):
    run = load_run(write_chat_run(tmp_path / "run", hf_model(tok.get_vocab_size(), max_len=64), tok),
                   device="cpu")
    notes: list[str] = []
    session = ChatSession(run.model, run.tokenizer, run.chat_template, "Be brief.",
                          DecodeOptions(temperature=0, max_new_tokens=6), notes.append)
    for turn in range(5):
        "".join(session.send(f"turn {turn}"))
        prompt = run.tokenizer.encode(run.chat_template.render(session.messages[:-1],
                                                               add_generation_prompt=True))
        assert len(prompt) + 6 <= 64
    assert notes and "dropped the oldest turn" in notes[0]
    assert session.messages[0] == {"role": "system", "content": "Be brief."}
    assert session.messages[-2]["content"] == "turn 4"
    assert len(session.messages) < 11  # older turns are gone
    with pytest.raises(ChatError, match="too long: its prompt is .* the model's context is 64"):
        "".join(session.send("word " * 60))
    assert session.turns == []  # the session stays usable
    assert "".join(session.send("hi")) == run.chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        temperature=0, max_new_tokens=6)


def test_chat_cli_with_piped_stdin_and_reset(chat_run, monkeypatch, capsys):
    run_dir, _ = chat_run
    run = load_run(run_dir, device="cpu")
    a1 = run.chat([{"role": "user", "content": "hello"}], **GREEDY)
    a2 = run.chat([{"role": "user", "content": "hello"}, {"role": "assistant", "content": a1},
                   {"role": "user", "content": "and then?"}], **GREEDY)
    a3 = run.chat([{"role": "user", "content": "and then?"}], **GREEDY)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nand then?\n\n/reset\nand then?\n/exit\nnever\n"))
    assert main(["chat", str(run_dir), "--max-new-tokens", "10", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert out.out == f"{a1}\n{a2}\n{a3}\n"
    assert "(conversation reset)" in out.err and "dropped" not in out.err
    assert a2 != a3  # the history mattered, and /reset forgot it


def test_chat_cli_too_long_turn_is_one_clear_line(chat_run, monkeypatch, capsys):
    run_dir, _ = chat_run
    monkeypatch.setattr(sys, "stdin", io.StringIO("word " * 300 + "\nhi\n"))
    assert main(["chat", str(run_dir), "--max-new-tokens", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert out.err.count("lmforge: this message is too long") == 1
    assert out.out.split("\n")[1] == load_run(run_dir, device="cpu").chat(
        [{"role": "user", "content": "hi"}], temperature=0, max_new_tokens=4)


def test_generate_chat_prints_the_reply(chat_run, capsys):
    run_dir, _ = chat_run
    assert main(["generate", str(run_dir), "--chat", "--system", "Be brief.", "--prompt",
                 "To be, or not?", "--temperature", "0", "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out == load_run(run_dir, device="cpu").chat(MESSAGES, **GREEDY) + "\n"


def test_chat_cli_without_a_template_uses_chatml_with_a_note(tmp_path, tok, monkeypatch, capsys):
    run_dir = write_chat_run(tmp_path / "run", hf_model(tok.get_vocab_size(), max_len=128), tok,
                             template=None)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    assert main(["chat", str(run_dir), "--max-new-tokens", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert out.err.startswith("note: ") and "no chat template; using ChatML" in out.err
    with pytest.warns(UserWarning):
        expected = load_run(run_dir, device="cpu").chat([{"role": "user", "content": "hello"}],
                                                        temperature=0, max_new_tokens=4)
    assert out.out == expected + "\n"
