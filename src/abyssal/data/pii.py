"""Find and mask personal data (PII) in texts and tables, by rules that validate what they match.

:func:`find_pii` returns where each piece of personal data is in a text, as :class:`PiiFinding`
(a kind and a character span, never the value itself); :func:`mask_text` replaces each with
``<KIND>``. :func:`scan_table` reports, per column, which kinds its text cells hold and in which
rows (:class:`PiiReport`); :func:`mask_table` returns a masked copy of a frame.

The kinds (:data:`KINDS`), each checked beyond its shape so that ordinary numbers are left alone:

- ``EMAIL``: ``local@domain.tld`` (RFC 5322's common subset: no quoted local parts, no IP
  literals); a local part starting or ending with a dot, or holding two dots, is refused.
- ``CARD``: 13 to 19 digits, in groups separated by single spaces or dashes, passing the Luhn
  check (and not one digit repeated).
- ``IBAN``: a country code, two check digits and the account part (spaces allowed), of the exact
  length that country's IBANs have (:data:`IBAN_LENGTHS`), passing the ISO 13616 mod-97 check.
  Upper case only, as IBANs are printed.
- ``NATIONAL_ID``: a US social security number ``ddd-dd-dddd`` (area 000, 666 and 900-999, group
  00 and serial 0000 never issued, so refused); a UK National Insurance number (``AB 12 34 56
  C``: the letters the prefix may not use, and the prefixes BG, GB, KN, NK, NT, TN, ZZ, refused);
  a Chinese resident identity number (18 characters: a region, a birth date that exists, a
  sequence number, and the ISO 7064 MOD 11-2 check character).
- ``ACCOUNT``: a run of 8 to 17 digits (single spaces or dashes allowed between them) that comes
  right after "account", "acct", "acc", "a/c", "konto" or "compte" (any case), with at most some
  of "number", "no.", "nr", "#", ":", "is", "ending in" between. A bare digit run elsewhere is not
  an account number.
- ``PHONE``: what the ``phonenumbers`` package (Google's libphonenumber) finds and considers a
  valid number for one of the ``regions`` (default :data:`DEFAULT_REGIONS`), national formats of
  those regions and any ``+``-prefixed international number. Texts with fewer than 7 digits are
  not searched.
- ``IP``: IPv4 (each part 0-255, no leading zeros) and IPv6 addresses, checked by
  :mod:`ipaddress`. A four-part version number such as 1.2.3.4 is an IPv4 address too.
- ``NAME``: up to three capitalized words after an honorific (Mr, Mrs, Ms, Mx, Dr, Prof, Sir,
  Dame, Mme, Mlle, Herr, Frau, Sr, Sra, Srta; the honorific itself stays), and "Firstname
  Lastname" (an optional initial and a second last name allowed) where the first name is in the
  gazetteer :data:`abyssal.data.pii_names.FIRST_NAMES` and the next word is capitalized and not a
  word such as Inc, Group, Bank or Street.

Overlapping findings are resolved longest first; on equal length the kind listed first in
:data:`KINDS` wins. Findings are returned in text order and never overlap.

Limits, honestly: these are rules, not a trained recognizer. Names outside the gazetteer are
missed unless an honorific precedes them (a lower-case name, a name written surname first, most
names from cultures the list covers thinly); a person named like a company or a company named
like a person ("Charles Schwab") is masked; "Miss" is not an honorific here, since title-case
headlines ("Results Miss Estimates") use it. Addresses, dates of birth, licence plates and
passport numbers are not detected in free text. Validation lowers false positives but a random
16-digit number still passes Luhn one time in ten. Use the report to review, not to certify.

Example:
    >>> mask_text("Mail jane.doe@example.com or call +44 20 7946 0958, Dr Ada Lovelace")
    'Mail <EMAIL> or call <PHONE>, Dr <NAME>'
    >>> [(f.kind, f.start, f.end) for f in find_pii("SSN 123-45-6789")]
    [('NATIONAL_ID', 4, 15)]
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from functools import cache
from typing import Any

import pandas as pd

from abyssal.core.display import table
from abyssal.core.errors import ConfigError, DataError
from abyssal.core.optional import require
from abyssal.data.pii_names import FIRST_NAMES

KINDS = ("EMAIL", "CARD", "IBAN", "NATIONAL_ID", "ACCOUNT", "PHONE", "IP", "NAME")
"""The kinds of personal data found; on spans of equal length the earlier kind wins."""
DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "CN", "IN")
"""Regions whose national phone formats are recognized by default (ISO 3166 alpha-2)."""
EXAMPLE_ROWS = 5
"""Row numbers a :class:`ColumnPii` keeps at most."""
MIN_PHONE_DIGITS = 7

Span = tuple[int, int]

# fmt: off
IBAN_LENGTHS: dict[str, int] = {
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
"""IBAN length (characters, without spaces) per country code, from the SWIFT IBAN registry."""
# fmt: on


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data in a text: its kind and where it is (``text[start:end]``).

    Attributes:
        kind: one of :data:`KINDS`.
        start: index of its first character.
        end: index after its last character.
        preview: the value with all but its first 2 characters replaced by ``*`` (for review;
            the raw value is never kept).
    """

    kind: str
    start: int
    end: int
    preview: str = ""


def preview(value: str) -> str:
    """``value`` with all but its first 2 characters starred: ``"ja**********"``."""
    return value[:2] + "*" * max(0, len(value) - 2) if len(value) > 2 else "*" * len(value)


def find_pii(
    text: str, kinds: Iterable[str] | None = None, *, regions: Sequence[str] = DEFAULT_REGIONS
) -> list[PiiFinding]:
    """The personal data in ``text``: non-overlapping findings in text order.

    Args:
        text: the text.
        kinds: the kinds to look for (default: all of :data:`KINDS`).
        regions: ISO 3166 region codes whose national phone formats are recognized.

    Returns:
        The findings, longest first where candidates overlap, sorted by ``start``.

    Raises:
        ConfigError: an unknown kind or phone region.
        MissingDependencyError: ``PHONE`` is asked for and ``phonenumbers`` is not installed.

    Example:
        >>> [f.kind for f in find_pii("card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32")]
        ['CARD', 'IBAN']
    """
    wanted = _kinds(kinds)
    candidates = [
        (span, kind) for kind in wanted for span in _DETECTORS[kind](text, tuple(regions))
    ]
    rank = {kind: i for i, kind in enumerate(KINDS)}
    candidates.sort(key=lambda c: (c[0][0] - c[0][1], rank[c[1]], c[0][0]))
    taken: list[PiiFinding] = []
    for (start, end), kind in candidates:
        if all(end <= t.start or start >= t.end for t in taken):
            taken.append(PiiFinding(kind, start, end, preview(text[start:end])))
    return sorted(taken, key=lambda f: f.start)


def mask_text(
    text: str, kinds: Iterable[str] | None = None, *, regions: Sequence[str] = DEFAULT_REGIONS
) -> str:
    """``text`` with each finding of :func:`find_pii` replaced by ``<KIND>``.

    Example:
        >>> mask_text("SSN 123-45-6789, acct no. 12345678")
        'SSN <NATIONAL_ID>, acct no. <ACCOUNT>'
    """
    return mask_findings(text, find_pii(text, kinds, regions=regions))


def mask_findings(text: str, findings: Sequence[PiiFinding]) -> str:
    """``text`` with each of ``findings`` (non-overlapping, from :func:`find_pii` on this very
    text) replaced by ``<KIND>``."""
    out = text
    for finding in sorted(findings, key=lambda f: f.start, reverse=True):
        out = f"{out[: finding.start]}<{finding.kind}>{out[finding.end :]}"
    return out


def _kinds(kinds: Iterable[str] | None) -> tuple[str, ...]:
    if kinds is None:
        return KINDS
    chosen = tuple(kinds) if not isinstance(kinds, str) else (kinds,)
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown PII kind(s) {unknown}; the kinds are {', '.join(KINDS)}")
    return chosen


# --- detectors: each returns candidate spans ----------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])(?P<local>[\w.%+-]{1,64})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


def _emails(text: str, regions: tuple[str, ...]) -> list[Span]:
    found = []
    for m in _EMAIL.finditer(text):
        local = m["local"]
        if not (local.startswith(".") or local.endswith(".") or ".." in local):
            found.append(m.span())
    return found


_DIGIT_CHAIN = re.compile(r"(?<![\w-])\d++(?:[ -]\d++)*+(?![\w])")


def _cards(text: str, regions: tuple[str, ...]) -> list[Span]:
    """Runs of digit groups: every stretch of whole groups with 13-19 digits passing Luhn."""
    found = []
    for chain in _DIGIT_CHAIN.finditer(text):
        groups = [(m.start() + chain.start(), m.end() + chain.start(), m[0])
                  for m in re.finditer(r"\d+", chain[0])]  # fmt: skip
        for i in range(len(groups)):
            digits = ""
            for j in range(i, len(groups)):
                digits += groups[j][2]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and _luhn(digits) and len(set(digits)) > 1:
                    found.append((groups[i][0], groups[j][1]))
    return found


def _luhn(digits: str) -> bool:
    """Whether ``digits`` pass the Luhn (mod 10) check of payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


_IBAN = re.compile(r"(?<![A-Za-z0-9])(?P<country>[A-Z]{2})\d{2}(?:[ ]?[A-Z0-9]){10,30}")


def _ibans(text: str, regions: tuple[str, ...]) -> list[Span]:
    found, pos = [], 0
    while m := _IBAN.search(text, pos):
        pos = m.start() + 1
        need = IBAN_LENGTHS.get(m["country"])
        end = _end_after(m[0], need) if need else None
        if end is None:
            continue
        stop = m.start() + end
        compact = m[0][:end].replace(" ", "")
        if (stop == len(text) or not text[stop].isalnum()) and _mod97(compact):
            found.append((m.start(), stop))
            pos = stop
    return found


def _end_after(candidate: str, count: int) -> int | None:
    """The index after the ``count``-th alphanumeric character of ``candidate``, if it has so
    many."""
    seen = 0
    for i, ch in enumerate(candidate):
        seen += ch.isalnum()
        if seen == count:
            return i + 1
    return None


def _mod97(iban: str) -> bool:
    """ISO 13616: the first four characters moved to the end, letters as 10-35, mod 97 is 1."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


_SSN = re.compile(r"(?<![\w-])(?P<area>\d{3})-(?P<group>\d{2})-(?P<serial>\d{4})(?![\w-])")
_NINO = re.compile(
    r"(?<![A-Za-z0-9])(?P<prefix>[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z])"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"
)
_NINO_UNUSED = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
_CN_ID = re.compile(r"(?<![\w])\d{6}(?P<born>\d{8})\d{3}[\dXx](?![\w])")
_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _national_ids(text: str, regions: tuple[str, ...]) -> list[Span]:
    found = [
        m.span()
        for m in _SSN.finditer(text)
        if m["area"] not in ("000", "666")
        and not m["area"].startswith("9")
        and m["group"] != "00"
        and m["serial"] != "0000"
    ]
    found += [m.span() for m in _NINO.finditer(text) if m["prefix"] not in _NINO_UNUSED]
    found += [m.span() for m in _CN_ID.finditer(text) if _cn_id_valid(m[0], m["born"])]
    return found


def _cn_id_valid(number: str, born: str) -> bool:
    """GB 11643: a birth date that exists and the ISO 7064 MOD 11-2 check character."""
    try:
        when = date(int(born[:4]), int(born[4:6]), int(born[6:]))
    except ValueError:
        return False
    if not 1900 <= when.year <= date.today().year:
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _CN_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == number[17].upper()


_ACCOUNT = re.compile(
    r"\b(?:account|acct|acc|a/c|konto|compte)\b\.?"
    r"(?:\s*(?:numbers?|num|nos?|nr|is|was|ending|in|#|:|-)\.?)*\s*"
    r"(?P<digits>\d(?:[ -]?\d){7,16}+)(?![\w-])",
    re.IGNORECASE,
)


def _accounts(text: str, regions: tuple[str, ...]) -> list[Span]:
    return [m.span("digits") for m in _ACCOUNT.finditer(text)]


def _phones(text: str, regions: tuple[str, ...]) -> list[Span]:
    if sum(ch.isdigit() for ch in text) < MIN_PHONE_DIGITS:
        return []
    numbers = _phonenumbers()
    found: set[Span] = set()
    for region in regions:
        if region not in numbers.SUPPORTED_REGIONS:
            raise ConfigError(
                f"unknown phone region {region!r}; use ISO 3166 codes such as "
                f"{', '.join(DEFAULT_REGIONS)}"
            )
        matches = numbers.PhoneNumberMatcher(text, region)
        found.update((m.start, m.end) for m in matches if _phone_like(m.raw_string))
    return sorted(found)


_DATE = re.compile(r"\d{1,2}([./-])\d{1,2}\1(?:\d{4}|\d{2})|\d{4}([./-])\d{1,2}\2\d{1,2}")


def _phone_like(raw: str) -> bool:
    """Whether a number ``phonenumbers`` accepts also looks like one: 7 digits or more, not a
    date, and dots only between groups of 2 digits or more (not decimals such as 33.6)."""
    if sum(ch.isdigit() for ch in raw) < MIN_PHONE_DIGITS or _DATE.fullmatch(raw):
        return False
    if "." in raw:
        runs = re.findall(r"\d+", raw)
        return all(len(run) >= 2 for run in runs) and ". " not in raw and " ." not in raw
    return True


@cache
def _phonenumbers() -> Any:
    return require("phonenumbers", extra="govern", purpose="finding phone numbers (PII)")


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def _ips(text: str, regions: tuple[str, ...]) -> list[Span]:
    found = []
    for pattern, kind in ((_IPV4, ipaddress.IPv4Address), (_IPV6, ipaddress.IPv6Address)):
        for m in pattern.finditer(text):
            try:
                kind(m[0])
            except ValueError:
                continue
            if sum(ch.isalnum() for ch in m[0]) >= 2:
                found.append(m.span())
    return found


_WORD = r"[^\W\d_]+(?:['’-][^\W\d_]+)*"
_HONORIFIC = re.compile(
    r"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof|Sir|Dame|Mme|Mlle|Herr|Frau|Sr|Sra|Srta)\b\.?[ ]+"
    rf"(?P<name>(?:(?:[^\W\d_]\.)+|{_WORD})(?:[ ](?:(?:[^\W\d_]\.)+|{_WORD})){{0,2}})"
)
_FIRST = re.compile(rf"(?<![\w'’-]){_WORD}")
_LAST = re.compile(rf"[ ](?:[A-Z]\.[ ])?(?P<last>{_WORD})")
_FIRST_NAMES = frozenset(FIRST_NAMES)
# fmt: off
NOT_SURNAMES = frozenset((
    "Inc", "Ltd", "Plc", "Corp", "Corporation", "Company", "Co", "Group", "Bank", "Banks",
    "Street", "St", "Avenue", "Road", "Square", "Station", "Airport", "University", "College",
    "School", "Hospital", "Holdings", "Capital", "Partners", "Fund", "Trust", "Foundation",
    "International", "Energy", "Motors", "Airlines", "Insurance", "Securities", "Financial",
    "Investments", "Technologies", "Systems", "Industries", "Media", "Pharma", "Foods",
    "Stores", "Limited", "Oyj", "Abp", "Said", "Says", "The", "And", "Of", "In", "On", "At",
    "For", "To", "From", "With", "By", "Is", "Was", "Has", "Had",
))
# fmt: on
"""Capitalized words that end a "Firstname Lastname" match instead of being the last name."""


def _names(text: str, regions: tuple[str, ...]) -> list[Span]:
    found = []
    for m in _HONORIFIC.finditer(text):
        span = _capitalized_prefix(text, m.start("name"), m["name"])
        if span is not None:
            found.append(span)
    for m in _FIRST.finditer(text):
        if m[0] in _FIRST_NAMES:
            end = _surname_end(text, m.end())
            if end is not None:
                found.append((m.start(), _surname_end(text, end) or end))
    return found


def _capitalized_prefix(text: str, start: int, words: str) -> Span | None:
    """The span of the leading capitalized words of ``words`` (at ``start``), if any."""
    end = start
    for word in words.split(" "):
        if not word[0].isupper() or word.rstrip(".") in NOT_SURNAMES:
            break
        end = text.index(word, end) + len(word)
    return (start, end) if end > start else None


def _surname_end(text: str, pos: int) -> int | None:
    """Where a capitalized last name right after ``pos`` ends, or ``None``."""
    m = _LAST.match(text, pos)
    if m is None:
        return None
    last = m["last"]
    if not last[0].isupper() or last in NOT_SURNAMES or (last.isupper() and len(last) <= 3):
        return None
    return m.end()


_DETECTORS: dict[str, Callable[[str, tuple[str, ...]], list[Span]]] = {
    "EMAIL": _emails,
    "CARD": _cards,
    "IBAN": _ibans,
    "NATIONAL_ID": _national_ids,
    "ACCOUNT": _accounts,
    "PHONE": _phones,
    "IP": _ips,
    "NAME": _names,
}


# --- tables -------------------------------------------------------------------------------------

_NAME_HINTS = (
    ("IBAN", r"(.+_)?iban(_.+)?"),
    ("EMAIL", r"(.+_)?e_?mail(_address)?"),
    ("PHONE", r"(.+_)?(phone|telephone|tel|mobile|cell|cellphone|msisdn|fax)(_?(number|no))?"),
    ("CARD", r"card|(credit_|debit_)?card_?(number|no|num|nr)|credit_?card|"
             r"cc_?(number|num|no)|pan"),
    ("ACCOUNT", r"(bank_)?(account|acct)(_?(number|no|num|nr))?"),
    ("NATIONAL_ID", r"ssn|social_security(_number)?|nino|national_(id|insurance)(_number|_no)?|"
                    r"passport(_number|_no)?|tax_id|resident_id|id_card(_number)?"),
    ("IP", r"(.+_)?ip(_?address|_addr)?"),
    ("NAME", r"name|surname|forename|cardholder|(account_|card_)?holder|(.+_)?(first|last|"
             r"given|family|middle|full|holder|customer|client|contact|person|patient|"
             r"employee|user)_?name"),
)  # fmt: skip
"""Column names (normalized to snake case) that say what personal data a column holds."""


def kind_from_name(column: str) -> str | None:
    """The kind of personal data a column's name announces, or ``None``.

    Example:
        >>> kind_from_name("firstName"), kind_from_name("Card Number"), kind_from_name("amount")
        ('NAME', 'CARD', None)
    """
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(column))
    name = re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")
    return next((kind for kind, rule in _NAME_HINTS if re.fullmatch(rule, name)), None)


@dataclass(frozen=True)
class ColumnPii:
    """The personal data of one column.

    Attributes:
        column: the column.
        kinds: the kinds found in its text cells, in :data:`KINDS` order.
        by_name: the kind its name announces (:func:`kind_from_name`), or ``None``.
        rows: how many scanned rows hold personal data in this column.
        examples: the first (at most :data:`EXAMPLE_ROWS`) of those rows, 1-based.
    """

    column: str
    kinds: tuple[str, ...]
    by_name: str | None
    rows: int
    examples: tuple[int, ...]


@dataclass(frozen=True)
class PiiReport:
    """Which columns of a table hold personal data (no values: kinds and row numbers only).

    Attributes:
        columns: the columns with personal data, by values or by name, in table order.
        scanned_rows: how many rows were scanned.
        scanned_columns: the columns scanned.
    """

    columns: tuple[ColumnPii, ...]
    scanned_rows: int
    scanned_columns: tuple[str, ...]

    @property
    def found(self) -> bool:
        """Whether any column holds personal data."""
        return bool(self.columns)

    def summary(self) -> str:
        """A text table, one line per column with personal data."""
        head = f"PII scan of {len(self.scanned_columns)} column(s), {self.scanned_rows} row(s): "
        if not self.columns:
            return head + "none found"
        rows = [
            [c.column, ", ".join(c.kinds) or "-", c.by_name or "-", c.rows,
             ", ".join(map(str, c.examples)) or "-"]
            for c in self.columns
        ]  # fmt: skip
        headers = ["column", "found", "by name", "rows", "first rows"]
        return f"{head}{len(self.columns)} column(s) hold PII\n{table(headers, rows)}"

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (JSON-ready)."""
        return {
            "scanned_rows": self.scanned_rows,
            "scanned_columns": list(self.scanned_columns),
            "columns": [
                {**asdict(c), "kinds": list(c.kinds), "examples": list(c.examples)}
                for c in self.columns
            ],
        }


def scan_table(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    max_rows: int | None = None,
    *,
    kinds: Iterable[str] | None = None,
    regions: Sequence[str] = DEFAULT_REGIONS,
) -> PiiReport:
    """Which columns of ``frame`` hold personal data: text cells by :func:`find_pii`, every
    column also by its name (:func:`kind_from_name`).

    Args:
        frame: the table.
        columns: the columns to scan (default: all).
        max_rows: scan only the first this many rows (default: all).
        kinds: the kinds to look for (default: all).
        regions: phone regions, as in :func:`find_pii`.

    Raises:
        DataError: a column not in the frame.
        ConfigError: ``max_rows`` below 1, an unknown kind or region.

    Example:
        >>> frame = pd.DataFrame({"note": ["hi", "mail a@b.org"], "email": ["-", "-"]})
        >>> [(c.column, c.kinds, c.by_name, c.examples) for c in scan_table(frame).columns]
        [('note', ('EMAIL',), None, (2,)), ('email', (), 'EMAIL', ())]
    """
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1, got {max_rows}")
    chosen = _columns(frame, columns)
    part = frame if max_rows is None else frame.iloc[:max_rows]
    found = []
    for position, name in chosen:
        column = _scan_column(name, part.iloc[:, position], kinds, regions)
        if column.kinds or column.by_name:
            found.append(column)
    return PiiReport(tuple(found), len(part), tuple(str(name) for _, name in chosen))


def _columns(frame: pd.DataFrame, columns: Sequence[str] | None) -> list[tuple[int, Any]]:
    """(position, name) of the chosen columns, in table order."""
    names = list(frame.columns)
    if columns is None:
        return list(enumerate(names))
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(
            f"no such column(s) {missing}; the columns are: {', '.join(map(str, names))}",
            column=str(missing[0]),
        )
    return [(i, name) for i, name in enumerate(names) if name in set(columns)]


BARE_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
"""A cell that is only a number. A column of them (timestamps, amounts, counts) is judged by its
name only: its values would otherwise pass for phone numbers, and 13-digit ones (millisecond
timestamps) for card numbers about one time in ten."""


def _scan_column(
    name: Any, values: pd.Series, kinds: Iterable[str] | None, regions: Sequence[str]
) -> ColumnPii:
    found: set[str] = set()
    rows = []
    cells = values.tolist()
    texts = [v.strip() for v in cells if isinstance(v, str) and v.strip()]
    if texts and all(BARE_NUMBER.fullmatch(t) for t in texts):
        cells = []  # a column of bare numbers is judged by its name only
    seen: dict[str, set[str]] = {}  # each distinct value scanned once (ids repeat a lot)
    for row, value in enumerate(cells, start=1):
        if isinstance(value, str) and value.strip():
            kinds_here = seen.get(value)
            if kinds_here is None:
                kinds_here = {f.kind for f in find_pii(value, kinds, regions=regions)}
                seen[value] = kinds_here
            if kinds_here:
                found |= kinds_here
                rows.append(row)
    ordered = tuple(k for k in KINDS if k in found)
    return ColumnPii(
        str(name), ordered, kind_from_name(name), len(rows), tuple(rows[:EXAMPLE_ROWS])
    )


def mask_table(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    by_name: bool = True,
    kinds: Iterable[str] | None = None,
    regions: Sequence[str] = DEFAULT_REGIONS,
) -> pd.DataFrame:
    """A copy of ``frame`` with personal data in its text cells masked.

    Text cells are masked by :func:`mask_text`; with ``by_name``, a non-empty text cell of a
    column whose name announces personal data (:func:`kind_from_name`) is replaced whole by
    ``<KIND>``, found by the rules or not. Cells that are not text (numbers, missing values) are
    left as they are.

    Raises:
        DataError: a column not in the frame.

    Example:
        >>> frame = pd.DataFrame({"name": ["Zed Q"], "note": ["ssn 123-45-6789"]})
        >>> mask_table(frame).iloc[0].tolist()
        ['<NAME>', 'ssn <NATIONAL_ID>']
    """
    out = frame.copy()
    for position, name in _columns(frame, columns):
        hint = kind_from_name(name) if by_name else None

        def mask(value: Any, hint: str | None = hint) -> Any:
            if not isinstance(value, str) or not value.strip():
                return value
            return f"<{hint}>" if hint else mask_text(value, kinds, regions=regions)

        out.isetitem(position, frame.iloc[:, position].map(mask))
    return out


def column_kinds(column: Mapping[str, Any]) -> list[str]:
    """The kinds of PII a column of a scan (one entry of ``PiiReport.to_dict()['columns']``)
    holds: found in its values, or named by its name."""
    kinds = list(column.get("kinds") or [])
    if column.get("by_name") and column["by_name"] not in kinds:
        kinds.append(column["by_name"])
    return kinds


def guard_table(
    frame: pd.DataFrame, columns: Sequence[str], policy: str, where: str = "the table"
) -> pd.DataFrame:
    """``frame`` with personal data in ``columns`` handled as ``policy`` says: ``mask`` (a copy
    with it masked, :func:`mask_table`), ``keep`` (as it is) or ``refuse``.

    Raises:
        ConfigError: an unknown policy.
        DataError: ``refuse`` and personal data in ``columns`` (columns, kinds and rows named,
            never values).
    """
    if policy not in ("mask", "keep", "refuse"):
        raise ConfigError(f"pii must be mask, keep or refuse; got {policy!r}")
    if policy == "keep" or not columns:
        return frame
    report = scan_table(frame, columns=list(columns))
    if not report.columns:
        return frame
    if policy == "refuse":
        named = "; ".join(
            f"{c.column} ({', '.join(column_kinds(asdict(c)))}) in {c.rows} rows, e.g. rows "
            + ", ".join(map(str, c.examples))
            for c in report.columns
        )
        raise DataError(f"{where}: personal data in {named} (pii=mask masks it)")
    return mask_table(frame, columns=list(columns))


def guard_value(value: Any, column: str, policy: str) -> Any:
    """One request's cell as ``guard_table`` would leave it: masked unless ``policy`` is
    ``keep`` (a column whose name announces a kind masks the whole value)."""
    if policy == "keep" or not isinstance(value, str) or not value.strip():
        return value
    kind = kind_from_name(column)
    return f"<{kind}>" if kind else mask_text(value)
