"""Reading texts (CSV, TSV, JSONL, Financial PhraseBank), its errors, and the synthetic sample."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.solutions.text.records import detect_format, read_texts
from abyssal.solutions.text.sample import CLASSES, TextSampleConfig, generate_sample


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_quoted_commas_and_newlines_keep_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "news.csv",
        'id,text,label\n1,"Sales rose, strongly",positive\n2,"Two\nlines",neutral\n\n'
        "3, Profit fell ,negative\n",
    )
    records = read_texts(path)
    assert records.texts == ["Sales rose, strongly", "Two\nlines", "Profit fell"]
    assert records.labels == ["positive", "neutral", "negative"]
    assert records.lines == [2, 3, 6]
    assert records.format == "csv"
    assert records.where(2) == f"{path} line 6"


def test_tsv_is_read_with_tabs(tmp_path: Path) -> None:
    path = write(tmp_path / "news.tsv", "label\ttext\npositive\tUp, a lot\nnegative\tDown\n")
    records = read_texts(path)
    assert records.texts == ["Up, a lot", "Down"]
    assert records.labels == ["positive", "negative"]


def test_csv_missing_column_lists_columns_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "news.csv", "sentence,label\nUp,positive\n")
    with pytest.raises(DataError) as info:
        read_texts(path)
    message = str(info.value)
    assert "no column 'text'" in message
    assert "the columns are: sentence, label" in message
    assert "data.text_column=" in message
    assert str(path) in message
    records = read_texts(path, text_column="sentence")
    assert records.texts == ["Up"]


def test_csv_missing_label_column_names_label_key(tmp_path: Path) -> None:
    path = write(tmp_path / "news.csv", "text,tag\nUp,positive\n")
    with pytest.raises(DataError, match=r"no column 'label'.*data\.label_column="):
        read_texts(path)


def test_csv_row_with_extra_fields_asks_for_quotes(tmp_path: Path) -> None:
    path = write(tmp_path / "news.csv", "text,label\nSales rose, strongly,positive\n")
    with pytest.raises(DataError, match=r"line 2: 3 fields but the header has 2.*double quotes"):
        read_texts(path)


def test_csv_unterminated_quote_names_the_row_it_starts(tmp_path: Path) -> None:
    path = write(tmp_path / "news.csv", 'text,label\nUp,positive\n"Down,negative\nFlat,neutral\n')
    with pytest.raises(DataError, match=r"line 3: not valid CSV \(unexpected end of data\)"):
        read_texts(path)


def test_empty_label_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "news.csv", "text,label\nUp,positive\nDown,  \n")
    with pytest.raises(DataError, match=r"line 3: empty label"):
        read_texts(path)


def test_empty_texts_are_listed_by_line(tmp_path: Path) -> None:
    rows = "".join(f"{'' if i % 2 else 'Up'},positive\n" for i in range(30))  # lines 2..31
    path = write(tmp_path / "news.csv", "text,label\n" + rows)
    with pytest.raises(DataError) as info:
        read_texts(path)
    message = str(info.value)
    assert "empty text on 15 line(s): 3, 5, 7, 9, 11, 13, 15, 17, 19, 21 and 5 more" in message


def test_empty_file_has_no_texts(tmp_path: Path) -> None:
    for name in ("empty.csv", "empty.jsonl", "empty.txt"):
        with pytest.raises(DataError, match="no texts"):
            read_texts(write(tmp_path / name, "\n\n"))


def test_unlabelled_csv_without_label_column(tmp_path: Path) -> None:
    path = write(tmp_path / "new.csv", "text\nUp\nDown\n")
    records = read_texts(path, require_labels=False)
    assert records.labels is None
    assert records.texts == ["Up", "Down"]
    with pytest.raises(DataError, match="no column 'label'"):
        read_texts(path)


def test_unlabelled_read_keeps_labels_or_drops_an_all_empty_column(tmp_path: Path) -> None:
    full = write(tmp_path / "a.csv", "text,label\nUp,positive\nDown,negative\n")
    assert read_texts(full, require_labels=False).labels == ["positive", "negative"]
    blank = write(tmp_path / "b.csv", "text,label\nUp,\nDown,\n")
    assert read_texts(blank, require_labels=False).labels is None
    partial = write(tmp_path / "c.csv", "text,label\nUp,positive\nDown,\n")
    with pytest.raises(DataError, match="line 3: empty label"):
        read_texts(partial, require_labels=False)


# --- JSONL --------------------------------------------------------------------------------------


def test_jsonl_int_labels_and_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "news.jsonl", '{"text": "Up", "label": 2}\n\n{"text": " Down ", "label": 0}\n'
    )
    records = read_texts(path)
    assert records.texts == ["Up", "Down"]
    assert records.labels == ["2", "0"]
    assert records.lines == [1, 3]
    assert records.format == "jsonl"


def test_jsonl_malformed_line(tmp_path: Path) -> None:
    path = write(tmp_path / "news.ndjson", '{"text": "Up", "label": "positive"}\n{"text": "Do\n')
    with pytest.raises(DataError, match=r"news\.ndjson: line 2: not valid JSON"):
        read_texts(path)


def test_jsonl_line_not_an_object(tmp_path: Path) -> None:
    path = write(tmp_path / "news.jsonl", '{"text": "Up", "label": "positive"}\n["Down"]\n')
    with pytest.raises(DataError, match=r"line 2: a list .*expected a JSON object"):
        read_texts(path)


def test_jsonl_missing_key_lists_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "news.jsonl", '{"sentence": "Up", "label": "positive"}\n')
    with pytest.raises(DataError) as info:
        read_texts(path)
    assert "line 1: no key 'text'; its keys are: sentence, label" in str(info.value)
    assert "data.text_column=" in str(info.value)


@pytest.mark.parametrize("label", ["true", "1.5", "null", '["a"]'])
def test_jsonl_label_of_a_wrong_type(tmp_path: Path, label: str) -> None:
    path = write(tmp_path / "news.jsonl", f'{{"text": "Up", "label": {label}}}\n')
    with pytest.raises(DataError, match=r"line 1: label 'label' is .*expected a string or an"):
        read_texts(path)


def test_jsonl_text_must_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path / "news.jsonl", '{"text": 5, "label": "positive"}\n')
    with pytest.raises(DataError, match=r"line 1: 'text' is an integer .*expected a string"):
        read_texts(path)


# --- PhraseBank and encodings -------------------------------------------------------------------


def test_phrasebank_latin1_is_read_and_label_is_after_last_at(tmp_path: Path) -> None:
    path = write(
        tmp_path / "Sentences_AllAgree.txt",
        "Caf\xe9 @positive\r\nMail a@b.com@neutral\r\n",
        "latin-1",
    )
    records = read_texts(path)
    assert records.format == "phrasebank"
    assert records.texts == ["Café", "Mail a@b.com"]
    assert records.labels == ["positive", "neutral"]


def test_phrasebank_read_as_utf8_names_line_and_suggests_latin1(tmp_path: Path) -> None:
    path = write(tmp_path / "pb.txt", "Fine @neutral\nCaf\xe9 @positive\n", "latin-1")
    with pytest.raises(DataError) as info:
        read_texts(path, encoding="utf-8")
    message = str(info.value)
    assert "line 2: byte 0xe9 cannot be read as UTF-8" in message
    assert "data.encoding=latin-1" in message


def test_phrasebank_line_without_at(tmp_path: Path) -> None:
    path = write(tmp_path / "pb.txt", "Up@positive\nno label here\n")
    with pytest.raises(DataError, match=r"line 2: no '@'"):
        read_texts(path, format="phrasebank")


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nUp,positive\n")
    assert read_texts(path).texts == ["Up"]


def test_unknown_codec_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "news.csv", "text,label\nUp,positive\n")
    with pytest.raises(ConfigError, match="unknown codec 'nope'"):
        read_texts(path, encoding="nope")


# --- formats ------------------------------------------------------------------------------------


def test_unknown_suffix_lists_formats(tmp_path: Path) -> None:
    path = write(tmp_path / "news.xlsx", "whatever")
    with pytest.raises(DataError) as info:
        read_texts(path)
    assert "the suffix '.xlsx'" in str(info.value)
    assert "data.format=" in str(info.value)
    assert ".jsonl" in str(info.value)


def test_detect_format(tmp_path: Path) -> None:
    plain = write(tmp_path / "notes.txt", "just a sentence\n")
    assert detect_format(tmp_path / "a.TSV") == "csv"
    assert detect_format(tmp_path / "a.ndjson") == "jsonl"
    assert detect_format(write(tmp_path / "pb.txt", "\nUp@positive\n")) == "phrasebank"
    assert detect_format(plain, "csv") == "csv"
    with pytest.raises(DataError, match="first lines are not 'sentence@label'"):
        detect_format(plain)
    with pytest.raises(ConfigError, match=r"data\.format must be auto"):
        detect_format(plain, "parquet")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_texts(tmp_path / "nope.csv")


# --- sample -------------------------------------------------------------------------------------


def test_sample_writes_files_that_read_back(tmp_path: Path) -> None:
    lines = generate_sample(TextSampleConfig(rows=90, new_rows=12, noise=0.0), tmp_path)
    assert [line.split(":")[0] for line in lines] == [
        str(tmp_path / name) for name in ("texts.csv", "texts.jsonl", "new.csv", "new_truth.csv")
    ]
    labelled = read_texts(tmp_path / "texts.csv")
    assert len(labelled.texts) == 90
    assert Counter(labelled.labels) == {name: 30 for name in CLASSES}
    as_json = read_texts(tmp_path / "texts.jsonl")
    assert (as_json.texts, as_json.labels) == (labelled.texts, labelled.labels)
    new = read_texts(tmp_path / "new.csv", require_labels=False)
    truth = read_texts(tmp_path / "new_truth.csv")
    assert new.labels is None
    assert new.texts == truth.texts and len(new.texts) == 12
    assert set(truth.labels or []) <= set(CLASSES)


def test_sample_lengths_vary(tmp_path: Path) -> None:
    generate_sample(TextSampleConfig(rows=300, new_rows=0), tmp_path)
    words = [len(t.split()) for t in read_texts(tmp_path / "texts.csv").texts]
    assert min(words) >= 5 and max(words) <= 60
    assert min(words) <= 8 and max(words) >= 40
    assert not (tmp_path / "new.csv").exists()


def test_sample_noise_flips_the_stated_share(tmp_path: Path) -> None:
    generate_sample(TextSampleConfig(rows=300, new_rows=0, noise=0.2), tmp_path / "noisy")
    generate_sample(TextSampleConfig(rows=300, new_rows=0, noise=0.0), tmp_path / "clean")
    noisy = read_texts(tmp_path / "noisy" / "texts.csv")
    clean = read_texts(tmp_path / "clean" / "texts.csv")
    assert noisy.texts == clean.texts
    changed = sum(a != b for a, b in zip(noisy.labels or [], clean.labels or [], strict=True))
    assert changed == 60


def test_sample_same_seed_same_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_sample(TextSampleConfig(rows=60, new_rows=5, seed=seed), tmp_path / name)
    read = lambda name: (tmp_path / name / "texts.csv").read_bytes()  # noqa: E731
    assert read("a") == read("b")
    assert read("a") != read("c")
    assert (tmp_path / "a" / "new.csv").read_bytes() == (tmp_path / "b" / "new.csv").read_bytes()


def test_sample_jsonl_rows_are_objects(tmp_path: Path) -> None:
    generate_sample(TextSampleConfig(rows=30, new_rows=0), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "texts.jsonl").read_text().splitlines()]
    with (tmp_path / "texts.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert rows == table


@pytest.mark.parametrize(
    ("options", "key"),
    [({"rows": 10}, "rows"), ({"new_rows": -1}, "new_rows"), ({"noise": 1.0}, "noise")],
)
def test_sample_options_are_checked(options: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        TextSampleConfig(**options)  # type: ignore[arg-type]
