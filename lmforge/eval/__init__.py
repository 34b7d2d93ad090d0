"""Evaluation: perplexity, classification report, BLEU/chrF (sacrebleu), ROUGE (rouge-score), plots."""

from .metrics import bleu, chrf, classification_report, perplexity, plot_confusion_matrix, rouge
from .plots import plot_metrics_csv

__all__ = [
    "bleu",
    "chrf",
    "classification_report",
    "perplexity",
    "plot_confusion_matrix",
    "plot_metrics_csv",
    "rouge",
]
