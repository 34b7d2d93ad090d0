"""Text-level decoding: streaming never splits a character, stop strings, empty prompts,
scores, `Run.generate/stream/score` and `lmforge generate` on a run whose output is known.

The run is a byte-level BPE bigram model wired by hand to cycle through the bytes of
"🐍é!" (4 + 2 + 1 byte tokens): its greedy text is known exactly, and every character but
"!" arrives in pieces.
"""

from __future__ import annotations

import pytest
import torch

from lmforge.cli import main
from lmforge.config import ModelConfig
from lmforge.generate import DecodeOptions, TextStream, complete, start_id
from lmforge.generate.command import unescape
from lmforge.models.build import build_model
from lmforge.run import load_run
from lmforge.tokenizers import train_tokenizer
from lmforge.train.checkpoint import CheckpointError, save_weights

CYCLE = "🐍é!"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: thread start-up costs more than the maths (and CI machines are shared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def emoji_run(tmp_path_factory):
    tok = train_tokenizer("bpe", ["hello world, a small text"] * 5, vocab_size=300)
    cycle = tok.encode(CYCLE)
    assert len(cycle) == 7 and len(set(cycle)) == 7  # one token per byte
    V = tok.vocab_size
    cfg = ModelConfig(arch="bigram", vocab_size=V, d_model=V)
    model = build_model(cfg)
    successor = dict(zip(cycle, cycle[1:] + cycle[:1]))
    successor[tok.eos_id] = cycle[0]  # a new document starts the cycle
    with torch.no_grad():
        model.backbone.embed.weight.copy_(torch.eye(V))  # hidden = [one-hot(a); 1]
        table = torch.zeros(V, V + 1)
        for a, b in successor.items():
            table[b, a] = 30.0  # logits(a -> b): p(successor) = 1 - O(V e^-30)
        model.lm_head.weight.copy_(table)
    path = tmp_path_factory.mktemp("emoji_run")
    (path / "model_config.json").write_text(cfg.to_json())
    tok.save(path / "tokenizer.json")
    save_weights(model, path / "model.safetensors")
    return path


@pytest.fixture
def run(emoji_run):
    return load_run(emoji_run, device="cpu")


# --------------------------------------------------------------------------- streaming


def test_stream_pieces_are_whole_characters_and_join_to_the_text(run):
    pieces = list(run.stream("", max_new_tokens=70, temperature=0))
    assert "".join(pieces) == CYCLE * 10 == run.generate("", max_new_tokens=70, temperature=0)
    assert all("\ufffd" not in p for p in pieces)
    assert "🐍" in pieces and "é" in pieces  # 4 and 2 byte tokens, each emitted once whole
    sampled = list(run.stream("🐍", max_new_tokens=35, seed=1))  # temperature 1 sampling
    assert all("\ufffd" not in p for p in sampled)
    assert "".join(sampled) == "é!" + CYCLE * 4 + "🐍"


def test_text_stream_holds_back_partial_bytes_and_possible_stop_strings(run):
    tok = run.tokenizer
    stream = TextStream(tok, stop=["\n\n"])
    pieces = [stream.push(i) for i in tok.encode("ab🐍\ncd\n\nef")]
    pieces.append(stream.flush())
    assert "".join(pieces) == "ab🐍\ncd" == stream.text and stream.stopped
    assert all("\ufffd" not in p for p in pieces)
    assert "\n" not in pieces and "\nc" in pieces  # "\n" waited until "c" ruled out a stop


def test_stop_strings_cut_the_text_and_end_generation(run):
    assert run.generate("", max_new_tokens=70, temperature=0, stop=["!"]) == "🐍é"
    assert "".join(run.stream("", max_new_tokens=70, temperature=0, stop=["é!"])) == "🐍"
    [gen] = run.generate([""], max_new_tokens=70, temperature=0, stop=["é!🐍"],
                         return_scores=True)
    assert gen.text == "🐍" and gen.finish_reason == "stop" and len(gen.ids) == 11
    beams = run.generate("", max_new_tokens=14, num_beams=2, stop=["!"])
    assert beams == "🐍é"


def test_eos_ends_generation(run):
    model, tok = run.model, run.tokenizer
    with torch.no_grad():  # "!" -> <eos> instead of -> 🐍
        bang = tok.encode("!")[0]
        saved = model.lm_head.weight[:, bang].clone()
        model.lm_head.weight[:, bang] = 0.0
        model.lm_head.weight[tok.eos_id, bang] = 30.0
    try:
        [gen] = run.generate([""], max_new_tokens=50, temperature=0, return_scores=True)
        assert gen.text == CYCLE and gen.finish_reason == "eos" and gen.ids[-1] == tok.eos_id
        assert "".join(run.stream("", max_new_tokens=50, temperature=0)) == CYCLE
    finally:
        with torch.no_grad():
            model.lm_head.weight[:, bang] = saved


# --------------------------------------------------------------------------- Run API


def test_empty_prompt_starts_from_eos_for_lmforge_tokenizers(run):
    assert start_id(run.tokenizer) == run.tokenizer.eos_id
    assert run.generate("", max_new_tokens=7, temperature=0) == CYCLE


def test_batched_ragged_prompts_samples_and_scores(run):
    texts = run.generate(["", "🐍", "🐍é!🐍é"], max_new_tokens=7, temperature=0)
    assert texts == [CYCLE, "é!🐍", "!🐍é"]
    samples = run.generate("🐍", max_new_tokens=3, num_samples=3, seed=0)
    assert samples == ["é!"] * 3  # the model is (almost) certain
    [[a, b]] = run.generate(["🐍"], max_new_tokens=3, num_samples=2, seed=0, return_scores=True)
    assert a.finish_reason == "length" and a.logprob == pytest.approx(0.0, abs=1e-6)


def test_score_equals_log_softmax_of_a_full_forward(run):
    tok, model = run.tokenizer, run.model
    for prompt, cont in [("", "🐍é"), ("🐍", "xyz"), ("hello", " world")]:
        p = tok.encode(prompt) or [tok.eos_id]
        c = tok.encode(cont)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + c]))[0][0].double(), -1)
        expected = sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(c))
        assert run.score(prompt, cont) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert run.score("", "🐍") > -1e-6 > -20 > run.score("", "x")
    assert run.score("🐍", ["é", "x"]) == [run.score("🐍", "é"), run.score("🐍", "x")]


def test_generation_logprob_matches_score(run):
    [gen] = run.generate(["🐍"], max_new_tokens=9, seed=3, temperature=1.5, return_scores=True)
    assert gen.logprob == pytest.approx(run.score("🐍", gen.text), abs=1e-4)


def test_bad_inputs_are_clear(run, emoji_run, tmp_path):
    for kwargs, word in [(dict(top_p=0.0), "top_p"), (dict(temperature=-0.5), "temperature"),
                         (dict(max_new_tokens=-1), "max_new_tokens")]:
        with pytest.raises(ValueError, match=word):
            run.generate("a", **kwargs)
        with pytest.raises(ValueError, match=word):
            list(run.stream("a", **kwargs))
    with pytest.raises(ValueError, match="num_samples"):
        list(run.stream("a", num_samples=2))
    empty = tmp_path / "no_weights"
    empty.mkdir()
    for name in ("model_config.json", "tokenizer.json"):
        (empty / name).write_bytes((emoji_run / name).read_bytes())
    with pytest.raises(CheckpointError, match="no weights"):
        load_run(empty)


def test_complete_batches_stop_strings_per_row(run):
    opts = DecodeOptions(max_new_tokens=30, temperature=0, stop=["é"])
    gens = complete(run.model, run.tokenizer, ["", "é"], opts)
    assert [g[0].text for g in gens] == ["🐍", "!🐍"]
    assert [g[0].finish_reason for g in gens] == ["stop", "stop"]


# --------------------------------------------------------------------------- command line


def test_cli_prints_prompt_and_continuation(emoji_run, capsys):
    assert main(["generate", str(emoji_run), "--prompt", "🐍", "--max-new-tokens", "7",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out == "🐍é!🐍\n"
    assert main(["generate", str(emoji_run), "--max-new-tokens", "14", "--top-k", "1",
                 "--stream", "--stop", "!🐍é"]) == 0
    assert capsys.readouterr().out == "🐍é\n"


def test_cli_prompt_file_samples_scores_and_beams(emoji_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("🐍\n\n!🐍\n", encoding="utf-8")
    assert main(["generate", str(emoji_run), "--prompt-file", str(prompts), "--num-samples", "2",
                 "--seed", "7", "--max-new-tokens", "3", "--scores"]) == 0
    out = capsys.readouterr()
    assert out.out.count("----- prompt") == 4 and "----- prompt 2, sample 2 -----" in out.out
    assert "🐍é!\n" in out.out and "!🐍é!\n" in out.out and out.err.count("[logprob") == 4
    assert main(["generate", str(emoji_run), "--prompt", "é", "--beams", "3", "--num-samples",
                 "2", "--max-new-tokens", "5", "--length-penalty", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("----- prompt 1, sample 1 -----\né!🐍\n") and out.count("-----") == 4


@pytest.mark.parametrize("args,word", [(["--top-p", "0"], "top_p"),
                                       (["--temperature", "-1"], "temperature"),
                                       (["--max-new-tokens", "-3"], "max_new_tokens"),
                                       (["--prompt-file", "missing.txt"], "missing.txt")])
def test_cli_bad_input_is_one_line(emoji_run, capsys, args, word):
    assert main(["generate", str(emoji_run), *args]) == 1
    err = capsys.readouterr().err
    assert word in err and err.count("\n") == 1


def test_stop_escapes():
    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb\\n") == "a\tb\\n"
