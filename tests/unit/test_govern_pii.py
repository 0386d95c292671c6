"""Rule-based PII detection: each kind on values that pass and fail its validation, masking,
overlaps, ordinary financial sentences left alone, and tables scanned and masked (by values and
by column names) without the values ever reaching a report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.pii import (
    KINDS,
    find_pii,
    kind_from_name,
    mask_table,
    mask_text,
    preview,
    scan_table,
)
from abyssal.data.pii_names import FIRST_NAMES

pytest.importorskip("phonenumbers")


def kinds(text: str) -> list[str]:
    return [f.kind for f in find_pii(text)]


def found(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in find_pii(text)]


@pytest.mark.parametrize(
    "text",
    [
        "profit rose by 12 percent to EUR 3.4 million in Q2 2024",
        "Operating profit totalled EUR 21.1 mn, up from EUR 18.6 mn in 2007, or 9.7 % of sales.",
        "The company had 1,234,567 shares and 12 345 678 options outstanding.",
        "Net sales for 2023-2024 rose; the period 01.01.2024-31.12.2024 closed on 2024-01-31.",
        "Pre-tax profit 33.6 26.9 18.7 5.1 and EPS 2.20 2.15 in euro.",
        "May Sales rose as the Bank said Group revenue was flat at 12:30:45.",
        "Founded in 1649, the group employs 33,000 people and ships 4,500,000 tonnes.",
        "The account grew 12 percent to EUR 98 million.",
    ],
)
def test_ordinary_financial_sentences_hold_no_pii(text: str) -> None:
    assert find_pii(text) == []
    assert mask_text(text) == text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("write to jane.doe@example.com today", "jane.doe@example.com"),
        ("cc: J_Smith+news@mail.bank.co.uk.", "J_Smith+news@mail.bank.co.uk"),
    ],
)
def test_emails_are_found(text: str, value: str) -> None:
    assert found(text) == [("EMAIL", value)]


@pytest.mark.parametrize(
    "text", ["a..b@example.com", ".ab@example.com", "name@localhost", "@x.org"]
)
def test_malformed_emails_are_not(text: str) -> None:
    assert "EMAIL" not in kinds(text)


@pytest.mark.parametrize(
    "number",
    [
        "+44 20 7946 0958",
        "(415) 555-0123",
        "415.555.0123",
        "+1-415-555-0123",
        "030 12345678",
        "01 42 68 53 00",
        "138 0013 8000",
        "+91 98765 43210",
        "+358 9 591 8342",
    ],
)
def test_phone_numbers_in_several_formats_are_found(number: str) -> None:
    assert found(f"call {number} now") == [("PHONE", number)]


def test_phone_regions_decide_national_formats() -> None:
    text = "call 01 42 68 53 00"
    assert [f.kind for f in find_pii(text, ["PHONE"], regions=["US"])] == []
    assert [f.kind for f in find_pii(text, ["PHONE"], regions=["FR"])] == ["PHONE"]
    with pytest.raises(ConfigError, match="unknown phone region 'XX'"):
        find_pii("call 415 555 0123", ["PHONE"], regions=["XX"])


@pytest.mark.parametrize(
    "card", ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117"]
)
def test_cards_passing_luhn_are_found(card: str) -> None:
    assert found(f"paid with {card}.") == [("CARD", card)]


@pytest.mark.parametrize(
    "card", ["4111 1111 1111 1112", "1234 5678 9012 3456", "0000 0000 0000 0000"]
)
def test_cards_failing_luhn_are_not(card: str) -> None:
    assert "CARD" not in kinds(f"paid with {card}.")


def test_a_card_is_found_inside_a_longer_run_of_digit_groups() -> None:
    assert found("card 4111 1111 1111 1111 2024 expiry") == [("CARD", "4111 1111 1111 1111")]


@pytest.mark.parametrize(
    "iban",
    ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606"],
)
def test_ibans_with_a_valid_check_are_found(iban: str) -> None:
    assert found(f"IBAN {iban} EUR") == [("IBAN", iban)]


@pytest.mark.parametrize(
    "iban",
    ["DE88 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654", "QQ89 3704 0044 0532 0130 00"],
)
def test_ibans_with_a_bad_check_length_or_country_are_not(iban: str) -> None:
    assert "IBAN" not in kinds(f"IBAN {iban}")


@pytest.mark.parametrize("ssn", ["078-05-1120", "123-45-6789"])
def test_valid_ssns_are_national_ids(ssn: str) -> None:
    assert found(f"SSN {ssn}.") == [("NATIONAL_ID", ssn)]


@pytest.mark.parametrize(
    "ssn", ["000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"]
)
def test_ssns_never_issued_are_not(ssn: str) -> None:
    assert kinds(f"SSN {ssn}.") == []


def test_uk_national_insurance_numbers() -> None:
    assert found("NINO AB 12 34 56 C") == [("NATIONAL_ID", "AB 12 34 56 C")]
    assert found("NINO AB123456C") == [("NATIONAL_ID", "AB123456C")]
    for bad in ("QQ 12 34 56 C", "GB 12 34 56 A", "AO 12 34 56 A", "AB 12 34 56 E"):
        assert "NATIONAL_ID" not in kinds(f"NINO {bad}"), bad


def test_chinese_resident_ids_need_a_real_birth_date_and_the_check_character() -> None:
    assert found("ID 11010519491231002X ok") == [("NATIONAL_ID", "11010519491231002X")]
    assert kinds("ID 110105194912310021 ok") == []  # wrong check character
    assert kinds("ID 11010519491331002X ok") == []  # month 13


def test_account_numbers_only_next_to_account_words() -> None:
    assert found("acct no. 12345678 closed") == [("ACCOUNT", "12345678")]
    assert found("Account number: 0012 3456 7890") == [("ACCOUNT", "0012 3456 7890")]
    assert found("a/c 987654321") == [("ACCOUNT", "987654321")]
    assert kinds("account 1234567 is short") == []  # 7 digits
    assert kinds("the order 12345678 shipped") == []  # no account word


def test_ip_addresses() -> None:
    assert found("from 192.168.1.20 and 2001:db8::8a2e:370:7334.") == [
        ("IP", "192.168.1.20"),
        ("IP", "2001:db8::8a2e:370:7334"),
    ]
    assert kinds("256.1.1.1 and 12:30:45 and 01.02.03.04") == []


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("said Mr Smith.", ["Smith"]),
        ("Dr. Ada Lovelace spoke", ["Ada Lovelace"]),
        ("Prof K.R. Vasantha was named", ["K.R. Vasantha"]),
        ("Maria Garcia Lopez met Ms Okafor", ["Maria Garcia Lopez", "Okafor"]),
        ("John F. Kennedy and Wei Zhang", ["John F. Kennedy", "Wei Zhang"]),
        ("chairman Oluwaseun Adeyemi said", ["Oluwaseun Adeyemi"]),
    ],
)
def test_names_after_honorifics_and_from_the_gazetteer(text: str, names: list[str]) -> None:
    assert found(text) == [("NAME", n) for n in names]


@pytest.mark.parametrize(
    "text",
    [
        "Paul Group said",  # an organization word
        "John EUR 3 million",  # an acronym
        "john smith paid",  # lower case
        "Zed Quux paid",  # a first name outside the gazetteer, no honorific: missed
        "Results Miss Estimates",  # Miss is not an honorific
    ],
)
def test_name_rules_stay_quiet(text: str) -> None:
    assert "NAME" not in kinds(text)


def test_the_gazetteer_is_a_few_hundred_distinct_names_without_ambiguous_words() -> None:
    assert 300 <= len(FIRST_NAMES) == len(set(FIRST_NAMES))
    assert not {"May", "April", "Will", "Mark", "Grace", "Can"} & set(FIRST_NAMES)


def test_masking_replaces_every_kind_and_keeps_the_rest() -> None:
    text = (
        "Dear Mr Smith, mail jane@x.org or call +44 20 7946 0958; card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, SSN 078-05-1120, acct 12345678, host 10.0.0.1."
    )
    assert mask_text(text) == (
        "Dear Mr <NAME>, mail <EMAIL> or call <PHONE>; card <CARD>, IBAN <IBAN>, SSN "
        "<NATIONAL_ID>, acct <ACCOUNT>, host <IP>."
    )
    assert mask_text(text, ["EMAIL"]).count("<") == 1
    with pytest.raises(ConfigError, match="unknown PII kind"):
        mask_text(text, ["POSTCODE"])


def test_findings_do_not_overlap_and_the_longest_wins() -> None:
    text = "a/c 4111111111111111"  # a card number that is also an account number
    findings = find_pii(text)
    assert [(f.kind, f.start, f.end) for f in findings] == [("CARD", 4, 20)]
    many = find_pii("jane@x.org 078-05-1120 jane@x.org")
    assert [(f.kind, f.start, f.end) for f in many] == [
        ("EMAIL", 0, 10),
        ("NATIONAL_ID", 11, 22),
        ("EMAIL", 23, 33),
    ]


def test_findings_hold_a_preview_not_the_value() -> None:
    (finding,) = find_pii("mail jane.doe@example.com")
    assert finding.preview == "ja" + "*" * 18
    assert "jane.doe" not in repr(finding)
    assert preview("ab") == "**" and preview("abc") == "ab*"
    assert set(KINDS) == {"EMAIL", "CARD", "IBAN", "NATIONAL_ID", "ACCOUNT", "PHONE", "IP", "NAME"}


def customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "first_name": ["Zed", "Quux", None],
            "note": ["card 4111 1111 1111 1111", "fine", "mail jane@x.org, SSN 078-05-1120"],
            "amount": [1.5, 2.0, 3.0],
            "company_name": ["Acme", "Initech", "Globex"],
        }
    )


def test_a_table_scan_reports_kinds_rows_and_name_hints_but_no_values() -> None:
    report = scan_table(customers())
    by_column = {c.column: c for c in report.columns}
    assert list(by_column) == ["first_name", "note"]
    assert by_column["first_name"].by_name == "NAME" and by_column["first_name"].kinds == ()
    note = by_column["note"]
    assert (note.kinds, note.rows, note.examples) == (("EMAIL", "CARD", "NATIONAL_ID"), 2, (1, 3))
    assert report.found and report.scanned_rows == 3 and len(report.scanned_columns) == 5
    summary, as_json = report.summary(), json.dumps(report.to_dict())
    assert "2 column(s) hold PII" in summary and "first_name" in summary and "1, 3" in summary
    for raw in ("4111", "jane@x.org", "078-05-1120", "Zed"):
        assert raw not in summary and raw not in as_json


def test_a_table_scan_can_be_limited_to_columns_and_rows() -> None:
    report = scan_table(customers(), columns=["note", "amount"], max_rows=2)
    assert [(c.column, c.kinds, c.examples) for c in report.columns] == [("note", ("CARD",), (1,))]
    assert "none found" in scan_table(customers(), columns=["amount"]).summary()
    with pytest.raises(DataError, match="no such column"):
        scan_table(customers(), columns=["nope"])
    with pytest.raises(ConfigError, match="max_rows"):
        scan_table(customers(), max_rows=0)


def test_masking_a_table_masks_text_cells_and_hinted_columns_in_a_copy() -> None:
    frame = customers()
    masked = mask_table(frame)
    assert masked["first_name"].tolist()[:2] == ["<NAME>", "<NAME>"]
    assert masked["first_name"].isna().tolist()[2]
    assert masked["note"].tolist() == ["card <CARD>", "fine", "mail <EMAIL>, SSN <NATIONAL_ID>"]
    assert masked["amount"].tolist() == [1.5, 2.0, 3.0]
    assert masked["company_name"].tolist() == ["Acme", "Initech", "Globex"]
    assert frame["note"][0] == "card 4111 1111 1111 1111"  # the original is untouched
    assert mask_table(frame, by_name=False)["first_name"].tolist()[0] == "Zed"
    assert mask_table(frame, columns=["first_name"])["note"][0] == frame["note"][0]


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("name", "NAME"),
        ("customerName", "NAME"),
        ("Last Name", "NAME"),
        ("email", "EMAIL"),
        ("E-Mail Address", "EMAIL"),
        ("phone_number", "PHONE"),
        ("ssn", "NATIONAL_ID"),
        ("iban", "IBAN"),
        ("card_number", "CARD"),
        ("account_no", "ACCOUNT"),
        ("ip_address", "IP"),
        ("company_name", None),
        ("amount", None),
        ("card_type", None),
    ],
)
def test_column_names_announce_kinds(column: str, kind: str | None) -> None:
    assert kind_from_name(column) == kind


def test_a_column_of_bare_numbers_is_judged_by_its_name_only() -> None:
    frame = pd.DataFrame(
        {
            "timestamp": ["1772357030", "1772357086"],  # would pass for US phone numbers
            "ts_ms": ["4111111111111", "1772357086000"],  # a 13-digit Luhn pass among them
            "amount": ["40.19", "173.2"],
            "phone": ["4155552671", "2025550143"],
        }
    )
    found = {c.column: (c.kinds, c.by_name) for c in scan_table(frame).columns}
    assert found == {"phone": ((), "PHONE")}
