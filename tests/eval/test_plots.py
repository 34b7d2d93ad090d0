"""plot_metrics_csv: the right files, robust to empty and half-written metrics.csv."""

from pathlib import Path

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
    # lr is plotted from the train rows (the schedule); tokens_per_s is not a metric plot;
    # elapsed_s is bookkeeping
    assert names == ["accuracy.png", "loss.png", "lr.png", "val_ppl.png"]
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
    assert sorted(p.name for p in written) == ["accuracy.png", "loss.png", "lr.png", "val_ppl.png"]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="nope.csv"):
        plot_metrics_csv(tmp_path / "nope.csv", tmp_path)


def test_lr_from_train_rows_ppl_with_a_train_curve_and_the_run_name_as_title(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    run = tmp_path / "my-run"
    run.mkdir()
    csv_path = run / "metrics.csv"
    rows = ["step,split,loss,ppl,lr,tokens_per_s,mfu,elapsed_s"]
    rows += [f"{s},train,{3 - s / 20:.3f},,{1e-3 * s / 10:.2e},900,,{s}" for s in range(1, 11)]
    rows.append(f"10,val,2.6,{2.718281828 ** 2.6:.4f},1e-3,,,10")
    csv_path.write_text("\n".join(rows) + "\n")
    drawn = {}
    real_savefig = Figure.savefig

    def spy(fig, path, *a, **k):  # record what each figure shows
        ax = fig.axes[0]
        drawn[Path(path).name.strip(".").split(".")[0] + ".png"] = (
            ax.get_title(), {line.get_label(): len(line.get_xdata()) for line in ax.get_lines()})
        return real_savefig(fig, path, *a, **k)

    monkeypatch.setattr(Figure, "savefig", spy)
    written = sorted(p.name for p in plot_metrics_csv(csv_path, run / "plots"))
    assert written == ["loss.png", "lr.png", "ppl.png"]  # the names docs/metrics.md lists
    assert {name: title for name, (title, _) in drawn.items()} == \
        {"loss.png": "my-run", "lr.png": "my-run", "ppl.png": "my-run"}
    assert drawn["lr.png"][1] == {"lr": 10}  # every training row, not the one val row
    assert drawn["ppl.png"][1] == {"train": 10, "val": 1}
