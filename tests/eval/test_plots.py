"""plot_metrics_csv: the right files, robust to empty and half-written metrics.csv."""

import pytest

from lmforge.eval import plot_metrics_csv

HEADER = "step,split,loss,lr,tokens_per_s,elapsed_s,accuracy,val_ppl\n"


def _write_csv(path, n_steps=200, eval_every=20):
    lines = [HEADER]
    for step in range(1, n_steps + 1):
        lines.append(f"{step},train,{3.0 / step ** 0.3:.4f},{1e-3:.2e},15000,{step * 0.05:.2f},,\n")
        if step % eval_every == 0:
            loss = 3.2 / step ** 0.3
            lines.append(f"{step},val,{loss:.4f},,,,{min(0.99, step / 250):.3f},{2.718 ** loss:.3f}\n")
    path.write_text("".join(lines))


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_writes_loss_and_val_metric_plots(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    _write_csv(csv_path)
    plot_metrics_csv(csv_path, tmp_path / "plots")
    written = plot_metrics_csv(csv_path, tmp_path / "plots")  # a second call replaces the files
    names = sorted(p.name for p in written)
    # lr / tokens_per_s only appear on train rows; elapsed_s is bookkeeping
    assert names == ["accuracy.png", "loss.png", "val_ppl.png"]
    assert all(_is_png(p) for p in written)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == names  # no temp files left


def test_empty_header_only_and_partial_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert plot_metrics_csv(empty, tmp_path / "p1") == []
    header = tmp_path / "header.csv"
    header.write_text(HEADER)
    assert plot_metrics_csv(header, tmp_path / "p2") == []
    # half-written last line, a garbage row, a non-finite loss: skipped, not fatal
    partial = tmp_path / "partial.csv"
    partial.write_text(HEADER + "1,train,3.0,1e-3,1,1,,\nxx,train,??\n2,train,nan,,,,,\n3,val,2.5,,,,0.5,12.1\n4,tra")
    written = plot_metrics_csv(partial, tmp_path / "p3")
    assert sorted(p.name for p in written) == ["accuracy.png", "loss.png", "val_ppl.png"]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="nope.csv"):
        plot_metrics_csv(tmp_path / "nope.csv", tmp_path)
