"""Personal data and secrets in running text: find, count, redact.

    finder = PIIFinder()                                   # every type, default phone regions
    spans = finder.find("mail jo@example.com or +44 20 7946 0958")
    finder.redact("mail jo@example.com")                   # 'mail [EMAIL]'

Each detector pairs a cheap regular expression with a validator, so a look-alike is not
counted: a card number must pass the Luhn checksum and start with a known issuer prefix, an
IBAN must have its country's length and pass ISO 13616's mod-97 check, an IP address must
parse with `ipaddress`, a phone number must be a valid number for one of the regions tried
(Google's `phonenumbers`). Where spans overlap, the type listed first in `TYPES` wins (a card
number is not also a phone number).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..config import ConfigError
from . import need

# order = priority when spans overlap
TYPES = ("secret", "url_credentials", "email", "iban", "card", "ipv6", "ipv4", "phone", "term")
TAGS = {"secret": "[SECRET]", "url_credentials": "[URL_CREDENTIALS]", "email": "[EMAIL]",
        "iban": "[IBAN]", "card": "[CARD]", "ipv4": "[IP]", "ipv6": "[IP]", "phone": "[PHONE]",
        "term": "[TERM]"}
STRUCTURED = ("email", "iban", "card", "ipv4", "ipv6", "url_credentials", "secret")
# regions tried for numbers written without a +country code (international ones match anywhere)
DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "ES", "IT", "NL", "CA")


@dataclass(frozen=True)
class Span:
    """One finding: [start, end) characters of the text, its type and the matched text."""

    start: int
    end: int
    kind: str
    text: str


# --------------------------------------------------------------------------- validators


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of payment card numbers.

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer_ok(digits: str) -> bool:
    """Issuer prefix and length of the major networks (Visa, Mastercard, Amex, Discover, JCB,
    Diners, UnionPay, Maestro): a Luhn-valid 16-digit order number is still not a card."""
    n, two, four = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # Amex
    if digits.startswith("6011") or two == 65 or 644 <= int(digits[:3]) <= 649:
        return 16 <= n <= 19  # Discover
    if 3528 <= four <= 3589:
        return 16 <= n <= 19  # JCB
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19  # Diners Club
    if two == 62:
        return 16 <= n <= 19  # UnionPay
    if two in (50, 56, 57, 58) or digits[:4] in ("6304", "6759", "6761", "6762", "6763"):
        return 12 <= n <= 19  # Maestro
    return False


# ISO 13616 IBAN registry: country -> total length (SWIFT IBAN registry, 2024)
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_ok(text: str) -> bool:
    """Country length and the mod-97 check of ISO 13616 (letters count as 10..35).

    >>> iban_ok("GB82 WEST 1234 5698 7654 32"), iban_ok("GB82 WEST 1234 5698 7654 33")
    (True, False)
    """
    iban = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def ip_ok(text: str, version: int) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == version


# --------------------------------------------------------------------------- patterns

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+"
                   r"[A-Za-z]{2,24}(?![\w-])")
# 12-19 digits, optionally in groups split by single spaces or dashes
CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){11,18}(?![\d])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|"
                  r"(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
URL_CREDENTIALS = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s/:@]+:[^\s/@]+@[^\s/?#]+")
# candidate phone numbers: digits with the usual separators, validated by phonenumbers
PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d ().\-/]{5,}\d(?![\w])")
IBAN_HEAD = re.compile(r"\b[A-Z]{2}\d{2} $")
DOTTED_QUAD = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
# common secret shapes, after gitleaks / detect-secrets rules
SECRET_PATTERNS = [
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{60,255}\b",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,72}\b",  # Slack
    r"\bAIza[0-9A-Za-z_\-]{35}(?![\w-])",  # Google API key
    r"\b[sr]k_(?:live|test)_[0-9A-Za-z]{24,99}\b",  # Stripe
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{32,200}(?![\w-])",  # OpenAI / Anthropic style keys
    r"\bglpat-[A-Za-z0-9_\-]{20}(?![\w-])",  # GitLab
    r"\bhf_[A-Za-z]{34}\b",  # Hugging Face
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JSON web token
    r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )?PRIVATE KEY-----|\Z)",
]
SECRET = re.compile("|".join(f"(?:{p})" for p in SECRET_PATTERNS))


# --------------------------------------------------------------------------- the finder


def read_terms(path: str | Path) -> list[str]:
    """A user's term list: one term a line, blank lines and `#` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"term list {str(path)!r} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid UTF-8 at byte offset {err.start}") from None
    terms = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not terms:
        raise ConfigError(f"{path}: the term list is empty")
    return terms


class PIIFinder:
    """Finds the spans of the chosen PII types in a text; `redact` replaces them with tags."""

    def __init__(self, types: Iterable[str] | None = None, regions: Iterable[str] = DEFAULT_REGIONS,
                 terms: Iterable[str] = ()) -> None:
        terms = [t for t in terms if t]
        chosen = list(types) if types is not None else [t for t in TYPES if t != "term" or terms]
        unknown = [t for t in chosen if t not in TYPES]
        if unknown:
            raise ConfigError(f"unknown PII type {unknown[0]!r}; valid: {', '.join(TYPES)}")
        if "term" in chosen and not terms:
            raise ConfigError("PII type 'term' needs a term list (--terms FILE)")
        self.types = [t for t in TYPES if t in chosen]  # priority order
        self.regions = [r.upper() for r in regions]
        self.term_pattern = None
        if terms:
            words = sorted(set(terms), key=len, reverse=True)  # longest first: "New York City"
            self.term_pattern = re.compile(
                r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
        self._detectors: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
            "secret": lambda t: _matches(SECRET, t),
            "url_credentials": lambda t: _matches(URL_CREDENTIALS, t),
            "email": lambda t: _matches(EMAIL, t),
            "iban": lambda t: _matches(IBAN, t, iban_ok),
            "card": self._cards,
            "ipv6": lambda t: _matches(IPV6, t, lambda s: ":" in s and ip_ok(s, 6)),
            "ipv4": lambda t: _matches(IPV4, t, lambda s: ip_ok(s, 4)),
            "phone": self._phones,
            "term": lambda t: _matches(self.term_pattern, t),
        }

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans, by position; an overlap goes to the higher-priority type."""
        taken: list[Span] = []
        for kind in self.types:
            for start, end in self._detectors[kind](text):
                if not any(start < s.end and s.start < end for s in taken):
                    taken.append(Span(start, end, kind, text[start:end]))
        return sorted(taken, key=lambda s: s.start)

    def redact(self, text: str, spans: list[Span] | None = None) -> str:
        """The text with every span replaced by its type's tag, e.g. [EMAIL]."""
        spans = self.find(text) if spans is None else spans
        out, pos = [], 0
        for span in spans:
            out += [text[pos:span.start], TAGS[span.kind]]
            pos = span.end
        return "".join(out) + text[pos:]

    def _cards(self, text: str) -> Iterator[tuple[int, int]]:
        for m in CARD.finditer(text):
            digits = re.sub(r"[ -]", "", m.group())
            if 12 <= len(digits) <= 19 and card_issuer_ok(digits) and luhn_ok(digits):
                yield m.start(), m.end()

    def _phones(self, text: str) -> Iterator[tuple[int, int]]:
        phonenumbers = need("phonenumbers", "phonenumbers")
        for m in PHONE_CANDIDATE.finditer(text):
            candidate = m.group()
            digits = sum(ch.isdigit() for ch in candidate)
            # E.164 numbers have at most 15 digits: a longer run is a card, an IBAN, an id
            longest = 17 if candidate.startswith("00") else 15  # 00 + country code + number
            if not 7 <= digits <= longest or DOTTED_QUAD.match(candidate):  # nor is 424.116.15.69
                continue
            if IBAN_HEAD.search(text, max(0, m.start() - 5), m.start()):  # the rest of an IBAN
                continue
            # "+44 ..." parses in any region; "0044 ..." needs one whose exit code is 00
            for region in (["ZZ"] if candidate.startswith("+") else self.regions):
                # a cheap parse first; the matcher's extra checks (dates, odd grouping) after
                try:
                    number = phonenumbers.parse(candidate, region)
                except phonenumbers.NumberParseException:
                    continue
                if not phonenumbers.is_valid_number(number):
                    continue
                found = next(iter(phonenumbers.PhoneNumberMatcher(
                    candidate, region, leniency=phonenumbers.Leniency.VALID)), None)
                # the whole candidate, not a piece of a longer number (a card, an ISBN)
                if found is not None and sum(ch.isdigit() for ch in found.raw_string) == digits:
                    yield m.start() + found.start, m.start() + found.end
                    break


def _matches(pattern: re.Pattern | None, text: str,
             valid: Callable[[str], bool] | None = None) -> Iterator[tuple[int, int]]:
    if pattern is None:
        return
    for m in pattern.finditer(text):
        if valid is None or valid(m.group()):
            yield m.start(), m.end()


def mask_example(text: str, span: Span, context: int = 40) -> str:
    """A report-safe example: the span replaced by its tag, with `context` characters around.

    >>> mask_example("write to jo@example.com today", Span(9, 23, "email", "jo@example.com"), 5)
    '…e to [EMAIL] toda…'
    """
    left = text[max(0, span.start - context):span.start]
    right = text[span.end:span.end + context]
    lead = "…" if span.start > context else ""
    tail = "…" if span.end + context < len(text) else ""
    return " ".join(f"{lead}{left}{TAGS[span.kind]}{right}{tail}".split())
