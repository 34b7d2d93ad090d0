"""docs/errors.md's bad-input table is the case table of tests/hardening/cases.py."""

from .errors_table import DOC, render


def test_errors_doc_is_generated_from_the_cases():
    text = DOC.read_text(encoding="utf-8")
    assert render(text) == text, "docs/errors.md is stale: run `PYTHONPATH=. python -m tests.hardening.errors_table`"
