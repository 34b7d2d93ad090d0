"""Which language a document is in, with `lingua` (n-gram models, offline, Rust core).

    detect = LanguageDetector()            # every language lingua knows
    detect("Zwei junge Männer im Freien")  # 'de'   (ISO 639-1; 'unknown' when unsure)
"""

from __future__ import annotations

from typing import Iterable

from ..config import ConfigError
from . import need

UNKNOWN = "unknown"
MAX_CHARS = 1000  # the head of a document is enough to tell its language


class LanguageDetector:
    """ISO 639-1 code of a text's language, among `languages` (default: all of lingua's)."""

    def __init__(self, languages: Iterable[str] | None = None) -> None:
        lingua = need("lingua", "lingua-language-detector")
        IsoCode639_1, Language = lingua.IsoCode639_1, lingua.Language
        LanguageDetectorBuilder = lingua.LanguageDetectorBuilder
        if languages:
            chosen = []
            for code in languages:
                iso = getattr(IsoCode639_1, code.strip().upper(), None)
                if iso is None:
                    raise ConfigError(f"unknown language code {code!r} (use ISO 639-1, e.g. en, de)")
                chosen.append(Language.from_iso_code_639_1(iso))
            # lingua needs two languages to choose between; one alone means "all, keep this"
            builder = LanguageDetectorBuilder.from_languages(*chosen) if len(chosen) > 1 \
                else LanguageDetectorBuilder.from_all_languages()
        else:
            builder = LanguageDetectorBuilder.from_all_languages()
        # low-accuracy mode: trigram models only, ~100 MB and fast; documents are long enough
        self.detector = builder.with_low_accuracy_mode().with_preloaded_language_models().build()

    def __call__(self, text: str) -> str:
        text = text[:MAX_CHARS]
        if not any(ch.isalpha() for ch in text):
            return UNKNOWN
        language = self.detector.detect_language_of(text)
        return language.iso_code_639_1.name.lower() if language is not None else UNKNOWN


def parse_languages(text: str | None) -> list[str]:
    """`en,de` -> ['en', 'de']; None or '' -> []."""
    return [c.strip().lower() for c in (text or "").split(",") if c.strip()]
