"""The text solution never stores raw personal data: a CSV with planted e-mails, phone numbers,
card numbers, an IBAN, an SSN and names is trained on through the CLI, a file is predicted and
requests are served, and then no planted value is in any file under ABYSSAL_HOME (store, runs,
logs), in the predictions file, in the captured output and logs, or in a served answer. With
``data.pii=refuse`` the file is refused, naming its lines and kinds."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from abyssal.cli.main import main
from tests.unit.tiny_text import texts_csv, tiny_bert

pytest.importorskip("transformers")
pytest.importorskip("phonenumbers")

FAST = ["train.epochs=2", "train.lr=0.01", "train.progress=false", "train.device=cpu"]
PLANTED = {
    "jane.doe@example.com": "EMAIL",
    "+44 20 7946 0958": "PHONE",
    "(415) 555-0123": "PHONE",
    "4111 1111 1111 1111": "CARD",
    "5500-0000-0000-0004": "CARD",
    "DE89 3704 0044 0532 0130 00": "IBAN",
    "078-05-1120": "NATIONAL_ID",
    "Maria Garcia": "NAME",
    "Okafor": "NAME",
}
"""Each planted raw value and the placeholder kind it becomes."""
CARRIERS = [
    "profit rose, write to {}",
    "sales increased by percent said {}",
    "contact {} about the quarter",
]
SECRETS = [v for v in PLANTED if v != "Okafor"] + ["Mr Okafor"]
"""What is planted: a surname outside the gazetteer only after an honorific (the rules' limit)."""


def planted_csv(path: Path) -> Path:
    """The tiny labelled texts, with a planted value added to every third text."""
    texts_csv(path)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows[::3]):
        row["text"] += " " + CARRIERS[i % 3].format(SECRETS[i % len(SECRETS)])
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def leaks(text: str) -> list[str]:
    """The planted values found in ``text`` (as written, or their digits run together)."""
    return [v for v in PLANTED if v in text or (v[0].isdigit() and v.replace(" ", "") in text)]


def leaking_files(folder: Path) -> dict[str, list[str]]:
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        found = leaks(path.read_bytes().decode("latin-1"))
        if found:
            out[str(path.relative_to(folder))] = found
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert"))


def test_no_planted_value_is_stored_written_logged_or_served(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, caplog
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from abyssal.core.store import ModelStore
    from abyssal.serve.app import create_app
    from abyssal.serve.models import load_served

    home = tmp_path / "home"
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    caplog.set_level(logging.DEBUG)
    data = planted_csv(tmp_path / "data" / "texts.csv")
    assert len(leaks(data.read_text())) == len(PLANTED)  # the check can see them

    args = ["train", "text", f"data.path={data}", f"model.base={base}", *FAST, "model.tuning=full"]
    assert main(args) == 0
    new = tmp_path / "data" / "new.csv"
    lines = [CARRIERS[i % 3].format(v) for i, v in enumerate(SECRETS)]
    new.write_text("text\n" + "".join(f'"{line}"\n' for line in lines))
    scored = tmp_path / "out" / "scored.csv"
    assert (
        main(["predict", "text", "--model", "text:1", "--input", str(new), "--out", str(scored)])
        == 0
    )
    with scored.open(newline="") as fh:
        written = [row["text"] for row in csv.DictReader(fh)]
    assert written[0] == "profit rose, write to <EMAIL>"
    assert {f"<{kind}>" for kind in PLANTED.values()} <= {
        word.strip(",") for text in written for word in text.split()
    }

    served = load_served(["text:1"], store=ModelStore(home))
    answers = []
    with TestClient(create_app(served)) as client:
        for line in lines:
            answer = client.post("/v1/models/text/predict", json={"text": line})
            assert answer.status_code == 200, answer.text
            answers.append(answer.text)
        batch = client.post(
            "/v1/models/text/predict", json={"instances": [{"text": t} for t in lines]}
        )
        assert batch.status_code == 200 and len(batch.json()["predictions"]) == len(lines)
        answers += [batch.text, client.get("/v1/models").text, client.get("/metrics").text]
    assert "label" in answers[0]

    out, err = capsys.readouterr()
    stored = {p.suffix for p in home.rglob("*") if p.is_file()}
    assert {".safetensors", ".csv"} <= stored  # the store and the run's split file were searched
    assert leaking_files(home) == {}
    assert leaks(scored.read_text()) == []
    assert leaks(out + err) == [] and leaks(caplog.text) == []
    assert leaks("\n".join(answers)) == []
    assert "personal data masked in" in caplog.text


def test_a_kept_policy_would_show_the_values_so_the_check_can_fail(
    base: Path, tmp_path: Path
) -> None:
    from abyssal.solutions.loading import load_model
    from abyssal.solutions.text.predict import TextPredictor, predict_texts

    data = planted_csv(tmp_path / "texts.csv")
    args = ["train", "text", f"data.path={data}", f"model.base={base}", *FAST, "train.epochs=1"]
    assert main(args) == 0
    new = tmp_path / "new.csv"
    new.write_text("text\ncontact jane.doe@example.com\n")
    masked = predict_texts(
        TextPredictor.from_loaded(load_model("text:1")), new, out=tmp_path / "m.csv"
    )
    kept = predict_texts(
        TextPredictor.from_loaded(load_model("text:1", overrides=["data.pii=keep"])),
        new,
        out=tmp_path / "k.csv",
    )
    assert masked.output is not None and kept.output is not None
    assert leaks((tmp_path / "m.csv").read_text()) == []
    assert leaks((tmp_path / "k.csv").read_text()) == ["jane.doe@example.com"]


def test_refuse_names_the_lines_and_kinds_never_the_values(
    base: Path, tmp_path: Path, capsys
) -> None:
    data = planted_csv(tmp_path / "texts.csv")
    args = ["train", "text", f"data.path={data}", f"model.base={base}", *FAST, "data.pii=refuse"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "data.pii=refuse: 12 text(s) hold personal data: line 2 (EMAIL); line 5 (PHONE)" in err
    assert "line 11 (CARD)" in err and "and 2 more" in err and "data.pii=mask" in err
    assert leaks(err) == []
