"""GloVe: co-occurrence counts, training recovers planted structure, vector files, embeddings, CLI."""

import random
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lmforge.convert.glove import (
    WordVectors,
    align_embeddings,
    build_cooccurrence,
    build_vocab,
    cli,
    load_into_embedding,
    tokenize,
    train_glove,
)

GROUPS = [[f"{name}{i}" for i in range(6)] for name in ("alpha", "beta", "gamma")]


def planted_corpus(seed=0, n_docs=300, length=20, noise=0.1):
    """Documents each drawn from one word group, with `noise` of words from any group."""
    rng = random.Random(seed)
    docs = []
    for n in range(n_docs):
        group = GROUPS[n % 3]
        words = [rng.choice(group) if rng.random() > noise else rng.choice(rng.choice(GROUPS)) for _ in range(length)]
        docs.append(" ".join(words))
    return docs


def naive_cooccurrence(docs, vocab, window):
    """The textbook double loop: pairs at distance d <= window add 1/d both ways."""
    index = {w: i for i, w in enumerate(vocab)}
    x = defaultdict(float)
    for doc in docs:
        ids = [index[w] for w in tokenize(doc) if w in index]
        for p in range(len(ids)):
            for d in range(1, window + 1):
                if p + d < len(ids):
                    x[ids[p], ids[p + d]] += 1.0 / d
                    x[ids[p + d], ids[p]] += 1.0 / d
    dense = np.zeros((len(vocab), len(vocab)))
    for (i, j), v in x.items():
        dense[i, j] = v
    return dense


# --------------------------------------------------------------------------- corpus and counts


def test_tokenize_and_vocab():
    assert tokenize("O Romeo, Romeo! 'Tis the KING'S") == ["o", "romeo", "romeo", "tis", "the", "king's"]
    words, counts = build_vocab(["b a a c", "a b d"], min_count=2)
    assert words == ["a", "b"] and counts["a"] == 3
    assert build_vocab(["b a a c", "a b d"], min_count=1, max_vocab=3)[0] == ["a", "b", "c"]  # ties alphabetical


def test_cooccurrence_worked_example():
    c = build_cooccurrence(["a b c"], ["a", "b", "c"], window=2)
    assert c.to_dense().tolist() == [[0, 1, 0.5], [1, 0, 1], [0.5, 1, 0]]
    # out-of-vocabulary words are removed before windowing (glove's cooccur.c): a-c become adjacent
    c = build_cooccurrence(["a zzz c"], ["a", "c"], window=1)
    assert c.to_dense().tolist() == [[0, 1], [1, 0]]
    # windows never cross documents
    assert build_cooccurrence(["a", "b"], ["a", "b"], window=5).nnz == 0


def test_cooccurrence_matches_naive_and_is_chunk_invariant():
    docs = planted_corpus(n_docs=30, length=15)
    docs += ["alpha0 " * 40]  # a long document spanning several chunks
    vocab, _ = build_vocab(docs, min_count=1)
    expected = naive_cooccurrence(docs, vocab, window=4)
    whole = build_cooccurrence(docs, vocab, window=4)
    np.testing.assert_allclose(whole.to_dense(), expected, atol=1e-9)
    # tiny chunks (pairs straddle chunk borders) and constant compaction give the same matrix
    chunked = build_cooccurrence(docs, vocab, window=4, chunk_tokens=7, max_pending=50)
    np.testing.assert_allclose(chunked.to_dense(), expected, atol=1e-9)
    assert whole.n_tokens == sum(len(d.split()) for d in docs)
    # token-id input (already tokenized) gives the same counts
    index = {w: i for i, w in enumerate(vocab)}
    ids = [[index[w] for w in tokenize(d)] for d in docs]
    np.testing.assert_allclose(build_cooccurrence(ids, vocab, window=4).to_dense(), expected, atol=1e-9)


def test_file_corpus_paragraphs_and_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("a b\nc\n\nd a\n")
    vocab = ["a", "b", "c", "d"]
    paragraphs = build_cooccurrence(path, vocab, window=1).to_dense()
    assert paragraphs[1, 2] == 1  # b-c: same paragraph across a line break
    assert paragraphs[2, 3] == 0  # c-d: the blank line ends the document
    lines = build_cooccurrence(path, vocab, window=1, documents="lines").to_dense()
    assert lines[1, 2] == 0
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"fine line\ncaf\xe9 au lait\n")
    with pytest.raises(ValueError, match=r"latin1.txt:2: not valid UTF-8"):
        build_cooccurrence(bad, ["fine"], window=1)


# --------------------------------------------------------------------------- training


def test_glove_recovers_planted_groups():
    docs = planted_corpus()
    vecs = train_glove(docs, dim=8, window=3, min_count=1, epochs=20, x_max=10, lr=0.2, batch_size=64,
                       seed=0, device="cpu", log_fn=lambda line: None)
    assert sorted(vecs.words) == sorted(w for g in GROUPS for w in g)
    for group in GROUPS:
        for word in group:
            neighbours = [w for w, _ in vecs.nearest(word, k=5)]
            assert sorted(neighbours) == sorted(set(group) - {word}), (word, neighbours)
    info = vecs.info
    assert info["losses"][-1] < info["losses"][0] / 3  # the objective went down
    assert len(info["epoch_s"]) == 20 and info["cooccur_s"] > 0 and info["tokens"] == 300 * 20


def test_train_glove_errors():
    with pytest.raises(ValueError, match="lower min_count"):
        train_glove(["a b c"], min_count=5, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="corpus file not found"):
        train_glove(Path("/nonexistent/corpus.txt"), epochs=1)


# --------------------------------------------------------------------------- vector files


def small_vectors():
    words = ["the", ",", "king", "queen", "man", "woman", "'s", "über"]
    g = torch.Generator().manual_seed(0)
    return WordVectors(words, torch.randn(len(words), 5, generator=g))


@pytest.mark.parametrize("fmt", ["glove", "word2vec"])
def test_save_load_round_trip(tmp_path, fmt):
    vecs = small_vectors()
    path = vecs.save(tmp_path / f"v.{fmt}.txt", format=fmt)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == "8 5" if fmt == "word2vec" else first.startswith("the ")
    back = WordVectors.load(path)
    assert back.words == vecs.words
    torch.testing.assert_close(back.vectors, vecs.vectors, rtol=1e-5, atol=1e-6)  # 6 significant digits
    exact = WordVectors.load(vecs.save(tmp_path / "exact.txt", precision=9))
    assert torch.equal(exact.vectors, vecs.vectors)  # 9 digits round-trip float32 exactly


def test_load_glove_sample_style_file(tmp_path):
    # the first lines of glove.6B.100d look like this (punctuation and clitics are words), cut to 4 dims
    path = tmp_path / "glove.sample.txt"
    path.write_text(
        "the -0.038194 -0.24487 0.72812 -0.39961\n"
        ", -0.10767 0.11053 0.59812 -0.54361\n"
        ". -0.33979 0.20941 0.46348 -0.64792\n"
        '" -0.30457 -0.23645 0.17576 -0.72854\n'
        "'s 0.58854 -0.2025 0.73479 -0.68338\n",
        encoding="utf-8",
    )
    vecs = WordVectors.load(path)
    assert vecs.words == ["the", ",", ".", '"', "'s"] and vecs.dim == 4
    assert vecs["the"][0].item() == pytest.approx(-0.038194)
    matrix, report = align_embeddings(vecs, {"<pad>": 0, "The": 1, ",": 2, "'s": 3, "cat": 4}, dim=4, pad_id=0)
    assert report["covered"] == 3 and report["lowercase_matches"] == 1
    torch.testing.assert_close(matrix[1], vecs["the"])


def test_ragged_line_names_file_and_line(tmp_path):
    path = tmp_path / "ragged.txt"
    path.write_text("a 1 2 3\nb 4 5 6\nc 7 8\n")
    with pytest.raises(ValueError, match=r"ragged.txt:3: ragged line: expected 3 values after the word, found 2"):
        WordVectors.load(path)
    path.write_text("a 1 2 3\nb 4 5 6 7\n")  # one number too many is ragged too, not a word with a space
    with pytest.raises(ValueError, match=r":2: ragged line"):
        WordVectors.load(path)
    path.write_text("a 1 2\nb x 5\n")
    with pytest.raises(ValueError, match=r":2: value 'x' is not a number"):
        WordVectors.load(path)
    path.write_text("3 2\na 1 2\nb 3 4\n")
    with pytest.raises(ValueError, match="header says 3 vectors but the file has 2"):
        WordVectors.load(path)


def test_words_with_spaces_and_non_utf8(tmp_path):
    path = tmp_path / "spaces.txt"
    path.write_text("a 1 2\nnew york 3 4\n")
    assert WordVectors.load(path).words == ["a", "new york"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a 1 2\ncaf\xe9 3 4\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: not valid UTF-8 \(byte 0xe9"):
        WordVectors.load(bad)
    assert WordVectors.load(bad, errors="replace").words == ["a", "caf\ufffd"]


def test_nearest_and_analogy():
    # king - man + woman lands on queen by construction
    words = ["man", "woman", "king", "queen", "apple"]
    vecs = WordVectors(words, torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1], [-1, -1, 0]]))
    assert vecs.analogy("man", "king", "woman", k=1)[0][0] == "queen"
    nearest = vecs.nearest("king", k=4)
    assert [w for w, _ in nearest][:2] in (["man", "queen"], ["queen", "man"]) and "king" not in dict(nearest)
    assert nearest[0][1] == pytest.approx(0.5 ** 0.5)
    assert vecs.nearest("KING", k=1)  # lowercase fallback
    with pytest.raises(ValueError, match="'prince' is not in the vocabulary"):
        vecs.nearest("prince")


# --------------------------------------------------------------------------- model embeddings


def test_align_coverage_init_and_projection():
    vecs = small_vectors()
    vocab = ["<pad>", "<unk>", "The", "king", "queen", "castle"]
    matrix, report = align_embeddings(vecs, vocab, dim=5, init="mean", pad_id=0)
    assert matrix.shape == (6, 5)
    assert (report["covered"], report["total"]) == (3, 6) and report["coverage"] == pytest.approx(0.5)
    assert report["missing_examples"] == ["<pad>", "<unk>", "castle"] and report["projection"] is None
    torch.testing.assert_close(matrix[3], vecs["king"])
    torch.testing.assert_close(matrix[5], vecs.vectors.mean(0))  # "mean" init
    assert matrix[0].abs().sum() == 0  # padding row
    # no lowercase fallback: "The" is not covered
    assert align_embeddings(vecs, vocab, dim=5, lowercase_fallback=False)[1]["covered"] == 2

    # widening keeps cosines exactly (orthonormal map); narrowing is PCA
    wide, rep = align_embeddings(vecs, ["king", "queen"], dim=12)
    assert rep["projection"] == "orthogonal" and wide.shape == (2, 12)
    cos = nn.functional.cosine_similarity
    assert cos(wide[0], wide[1], dim=0) == pytest.approx(cos(vecs["king"], vecs["queen"], dim=0).item(), abs=1e-5)
    narrow, rep = align_embeddings(vecs, ["king", "queen"], dim=2)
    assert rep["projection"] == "pca" and narrow.shape == (2, 2)


def test_low_coverage_warns_with_the_figure():
    vecs = small_vectors()
    vocab = {f"tok{i}": i for i in range(40)} | {"king": 40}
    with pytest.warns(UserWarning, match=r"cover only 2\.4% of the model vocabulary \(1 of 41 tokens\)"):
        _, report = align_embeddings(vecs, vocab, dim=5)
    assert report["coverage"] == pytest.approx(1 / 41)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 50 % coverage: no warning
        align_embeddings(vecs, ["king", "castle"], dim=5)


@pytest.mark.parametrize("freeze", [True, False])
def test_load_into_embedding(tmp_path, freeze):
    vecs = small_vectors()
    path = vecs.save(tmp_path / "v.txt", precision=9)
    emb = nn.Embedding(6, 5, padding_idx=0)
    report = load_into_embedding(emb, path, ["<pad>", "king", "queen", "man", "castle"], freeze=freeze)
    assert report["covered"] == 3 and report["frozen"] == freeze
    torch.testing.assert_close(emb.weight[1].detach(), vecs["king"])
    assert emb.weight[0].abs().sum() == 0
    assert emb.weight.requires_grad == (not freeze)
    with pytest.raises(ValueError, match="vocabulary has 9 ids but the embedding has only 6 rows"):
        load_into_embedding(emb, vecs, {"king": 8}, freeze=freeze)


# --------------------------------------------------------------------------- command line


def test_cli_train_nearest_analogy(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(planted_corpus(n_docs=150)))
    out = tmp_path / "vectors.txt"
    rc = cli(["train", "--data", str(corpus), "--out", str(out), "--dim", "8", "--window", "3", "--min-count", "1",
              "--epochs", "3", "--x-max", "10", "--batch-size", "64", "--device", "cpu"])
    assert rc == 0 and WordVectors.load(out).dim == 8
    assert "epoch 3/3" in capsys.readouterr().out
    assert cli(["nearest", str(out), "alpha0", "beta1", "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "nearest to 'alpha0':" in printed and "nearest to 'beta1':" in printed
    assert len([line for line in printed.splitlines() if line.strip()[:1].isdigit()]) == 6
    assert cli(["analogy", str(out), "alpha0", "alpha1", "beta0", "-k", "2"]) == 0
    assert "alpha0 : alpha1 :: beta0 : ?" in capsys.readouterr().out
    assert cli(["nearest", str(out), "nosuchword"]) == 2
    assert "error: word 'nosuchword' is not in the vocabulary" in capsys.readouterr().err
    assert cli(["nearest", str(tmp_path / "missing.txt"), "a"]) == 2
