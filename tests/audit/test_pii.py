"""Each PII detector on positives and on look-alikes that must not be flagged."""

from __future__ import annotations

import pytest

from lmforge.audit.pii import PIIFinder, iban_ok, luhn_ok
from lmforge.config import ConfigError

POSITIVES = {
    "email": ["write to jo.doe+tag@example.co.uk today", "Mail: A_B@sub.mail-host.org."],
    "phone": ["call +44 20 7946 0958 now", "call (415) 555-2671 tonight", "Tel. +49 30 901820",
              "ring 0044 20 7946 0958", "+33 1 42 68 53 00 is the office", "+91 98765 43210 mobile"],
    "card": ["card 4111 1111 1111 1111 exp", "pay with 5500-0000-0000-0004", "amex 378282246310005"],
    "iban": ["IBAN GB82 WEST 1234 5698 7654 32 ok", "to DE89370400440532013000 now",
             "FR1420041010050500013M02606"],
    "ipv4": ["host 192.168.10.1 is up", "from 8.8.8.8."],
    "ipv6": ["addr 2001:db8::ff00:42:8329 up", "fe80::1ff:fe23:4567:890a"],
    "url_credentials": ["clone https://bob:hunter2@git.example.com/repo.git", "postgres://u:p4ss@db:5432/x"],
    "secret": ["key AKIAIOSFODNN7EXAMPLE set", "token ghp_" + "A1b2" * 9,
               "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"],
}
LOOKALIKES = [
    "card 4111 1111 1111 1112 fails Luhn",            # 16 digits, bad checksum
    "order 1234567812345678 shipped",                 # Luhn-valid? no issuer: not a card
    "IBAN GB82 WEST 1234 5698 7654 33 is mistyped",   # bad mod-97
    "version 1.2.3 and 999.1.1.1 and 10.0.0",         # not IPv4
    "meet at 12:30:45 or 10:15",                      # times, not IPv6
    "on 2024-01-15, zip 94103, year 1999, 12,500,000 people",  # dates and counts, not phones
    "see https://example.com/path?user=a:b and mailto-ish a@b",  # no credentials; no TLD
    "the string AKIA is short and sk-short too",
]


@pytest.mark.parametrize("kind, text", [(k, t) for k, ts in POSITIVES.items() for t in ts])
def test_positive_is_found_with_its_type(kind, text):
    spans = PIIFinder().find(text)
    assert [s.kind for s in spans] == [kind], spans


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalike_is_not_flagged(text):
    assert PIIFinder().find(text) == []


def test_checksums_by_hand():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")  # Luhn's textbook example
    assert iban_ok("NL91ABNA0417164300") and not iban_ok("NL91ABNA0417164301")
    assert not iban_ok("NL91ABNA041716430")  # wrong length for NL


def test_redact_replaces_every_span_with_its_tag():
    finder = PIIFinder()
    text = "jo@example.com, 4111 1111 1111 1111, 10.0.0.1 and +44 20 7946 0958"
    assert finder.redact(text) == "[EMAIL], [CARD], [IP] and [PHONE]"


def test_user_terms_and_bad_types(tmp_path):
    finder = PIIFinder(terms=["Project Falcon", "ACME"])
    assert finder.redact("the project falcon team at Acme, not acmes") == "the [TERM] team at [TERM], not acmes"
    with pytest.raises(ConfigError, match="unknown PII type 'ssn'"):
        PIIFinder(types=["ssn"])
    with pytest.raises(ConfigError, match="needs a term list"):
        PIIFinder(types=["term"])


def test_types_subset_and_overlap_priority():
    # a card number is never also reported as a phone number
    assert [s.kind for s in PIIFinder().find("4111111111111111")] == ["card"]
    assert PIIFinder(types=["email"]).find("4111111111111111 jo@x.org")[0].kind == "email"
