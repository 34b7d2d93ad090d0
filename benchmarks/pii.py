"""PII detector precision and recall per type, on a generated labelled set.

    python benchmarks/pii.py --docs 5000 --seed 0

Each document is a line of running text (a sentence of Tiny Shakespeare, then a template
sentence) holding 0-2 true findings and 0-2 look-alikes: 16-digit numbers that fail Luhn,
Luhn-valid numbers with no card issuer prefix, IBANs with a wrong check digit, dotted
numbers that are not IPv4 addresses, clock times, dates, order numbers, amounts, URLs
without credentials, truncated key shapes. Positives are generated valid (phone numbers
are valid numbers of their region per `phonenumbers`, written in national or
international format). A prediction counts as correct when it overlaps a true span of the
same type.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import string
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import phonenumbers  # noqa: E402

from lmforge.audit.pii import IBAN_LENGTHS, STRUCTURED, PIIFinder, luhn_ok  # noqa: E402

PHONE_REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "ES", "IT", "NL", "CA"]
FOREIGN = ["MX", "ZA", "KR", "NG", "SE", "PL", "AR", "EG"]  # written with +country code
WORDS = "the a of report account customer order ticket please see call note sent".split()


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choices(string.digits, k=length - len(prefix) - 1))
    return next(body + d for d in string.digits if luhn_ok(body + d))


def group(digits: str, sep: str, size: int = 4) -> str:
    return sep.join(digits[i:i + size] for i in range(0, len(digits), size)) if sep else digits


def card(rng):
    prefix, n = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15),
                            ("37", 15), ("6011", 16), ("65", 16), ("3530", 16)])
    return group(luhn_complete(prefix, n, rng), rng.choice(["", " ", "-"]))


def iban(rng, valid=True):
    country = rng.choice(sorted(IBAN_LENGTHS))
    bban = "".join(rng.choices(string.digits, k=IBAN_LENGTHS[country] - 4))
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    if not valid:
        check = (check + rng.randint(1, 90)) % 97 + 2 if check > 1 else check + 1
    return group(f"{country}{check:02d}{bban}", rng.choice(["", " "]))


def phone(rng):
    region = rng.choice(PHONE_REGIONS + FOREIGN)
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE) \
        or phonenumbers.example_number(region)
    national = str(example.national_number)
    for _ in range(100):  # vary the subscriber digits, keep the number valid
        digits = national[:3] + "".join(rng.choices(string.digits, k=len(national) - 3))
        number = phonenumbers.parse("+" + str(example.country_code) + digits)
        if phonenumbers.is_valid_number(number):
            break
    else:
        number = example
    fmt = phonenumbers.PhoneNumberFormat.INTERNATIONAL if region in FOREIGN or rng.random() < 0.4 \
        else phonenumbers.PhoneNumberFormat.NATIONAL
    return phonenumbers.format_number(number, fmt)


def rand(chars, n, rng):
    return "".join(rng.choices(chars, k=n))


ALNUM = string.ascii_letters + string.digits
POSITIVES = {
    "email": lambda r: f"{rand(string.ascii_lowercase, r.randint(3, 8), r)}.{rand(string.ascii_lowercase, 4, r)}"
                       f"@{rand(string.ascii_lowercase, 6, r)}.{r.choice(['com', 'org', 'de', 'co.uk', 'io'])}",
    "phone": phone,
    "card": card,
    "iban": iban,
    "ipv4": lambda r: str(ipaddress.IPv4Address(r.randint(1 << 24, (223 << 24) - 1))),
    "ipv6": lambda r: str(ipaddress.IPv6Address(r.getrandbits(128) & ~(0xFFFF << 64) | (0x2001 << 112))),
    "url_credentials": lambda r: f"{r.choice(['https', 'postgres', 'ftp', 'redis'])}://"
                                 f"{rand(string.ascii_lowercase, 5, r)}:{rand(ALNUM, 10, r)}@"
                                 f"{rand(string.ascii_lowercase, 6, r)}.example.com/db",
    "secret": lambda r: r.choice([
        "AKIA" + rand(string.ascii_uppercase + string.digits, 16, r),
        "ghp_" + rand(ALNUM, 36, r), "sk_live_" + rand(ALNUM, 24, r),
        "xoxb-" + rand(string.digits, 12, r) + "-" + rand(ALNUM, 24, r),
        "AIza" + rand(ALNUM + "_-", 35, r), "glpat-" + rand(ALNUM, 20, r)]),
}
def bad_luhn(r: random.Random) -> str:
    good = luhn_complete("4", 16, r)
    return group(good[:-1] + str((int(good[-1]) + r.randint(1, 9)) % 10), " ")


LOOKALIKES = [
    bad_luhn,  # a Visa-shaped 16-digit number that fails Luhn
    lambda r: luhn_complete(r.choice(["9", "1", "7"]), 16, r),  # Luhn-valid, no issuer
    lambda r: iban(r, valid=False),
    lambda r: f"{r.randint(256, 999)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(0, 255)}",
    lambda r: f"version {r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 99)}",
    lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
    lambda r: f"{r.randint(1990, 2030)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    lambda r: f"order #{r.randint(10**5, 10**6)}",
    lambda r: f"{r.randint(1, 999)},{r.randint(100, 999)},{r.randint(100, 999)} dollars",
    lambda r: f"https://{rand(string.ascii_lowercase, 6, r)}.com/page?id={r.randint(1, 99)}",
    lambda r: "AKIA" + rand(string.ascii_uppercase, 8, r),
    lambda r: f"ISBN 978-{r.randint(0, 9)}-{r.randint(100, 999)}-{r.randint(10000, 99999)}-{r.randint(0, 9)}",
]
TEMPLATES = ["please see {} in the {} file", "the {} was sent with {}", "{} and then {}",
             "note: {} ({})", "call about {} or {}"]


def make_doc(rng: random.Random, filler: list[str]) -> tuple[str, list[tuple[int, int, str]]]:
    items = [(k, POSITIVES[k](rng)) for k in rng.choices(list(POSITIVES), k=rng.randint(0, 2))]
    items += [(None, rng.choice(LOOKALIKES)(rng)) for _ in range(rng.randint(0, 2))]
    rng.shuffle(items)
    text, spans = rng.choice(filler).strip() + " ", []
    for kind, value in items:
        text += rng.choice(WORDS) + " "
        if kind is not None:
            spans.append((len(text), len(text) + len(value), kind))
        text += value + " " + rng.choice(WORDS) + ". "
    return text, spans


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    filler = [line for line in (ROOT / "lmforge/assets/tinyshakespeare.txt").read_text().splitlines()
              if len(line) > 20]
    docs = [make_doc(rng, filler) for _ in range(a.docs)]
    finder = PIIFinder()
    tp, fp, fn = Counter(), Counter(), Counter()
    missed: dict[str, list[str]] = {}
    wrong: dict[str, list[str]] = {}
    t0 = time.perf_counter()
    for text, gold in docs:
        found = finder.find(text)
        for s, e, kind in gold:
            hit = any(f.kind == kind and f.start < e and s < f.end for f in found)
            tp[kind] += hit
            fn[kind] += not hit
            if not hit:
                missed.setdefault(kind, []).append(text[s:e])
        for f in found:
            if not any(f.kind == k and f.start < e and s < f.end for s, e, k in gold):
                fp[f.kind] += 1
                wrong.setdefault(f.kind, []).append(f.text)
    seconds = time.perf_counter() - t0
    mb = sum(len(t) for t, _ in docs) / 1e6
    print(f"{a.docs} documents, {mb:.2f} MB, {sum(tp.values()) + sum(fn.values())} true findings; "
          f"detection {mb / seconds:.2f} MB/s\n")
    print(f"{'type':<16} {'true':>6} {'found':>6} {'precision':>9} {'recall':>7}  structured")
    for kind in POSITIVES:
        gold, pred = tp[kind] + fn[kind], tp[kind] + fp[kind]
        prec = tp[kind] / pred if pred else float("nan")
        rec = tp[kind] / gold if gold else float("nan")
        print(f"{kind:<16} {gold:>6} {pred:>6} {prec:>9.4f} {rec:>7.4f}  {'yes' if kind in STRUCTURED else 'no'}")
    for kind, values in missed.items():
        print(f"missed {kind}: {values[:3]}")
    for kind, values in wrong.items():
        print(f"false {kind}: {values[:3]}")


if __name__ == "__main__":
    main()
