"""The nodule solution end to end on a small generated sample: a classifier, Models Genesis
pretraining and a classifier started from it trained and registered; per-nodule volumes (one
corrupt) and the candidates of a whole scan (one outside it) predicted, with saliency PNGs; a
genesis model refused at prediction; the CLI's ``--scan``/``--candidates`` path."""

from __future__ import annotations

import csv
import locale
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from abyssal.cli.main import main
from abyssal.core.errors import DataError
from abyssal.core.store import ModelStore
from abyssal.solutions.loading import LoadedModel, load_model
from abyssal.solutions.nodule.evaluation import auroc, sigmoid
from abyssal.solutions.nodule.sample import NoduleSampleConfig, generate_sample
from abyssal.solutions.nodule.volumes import read_candidates, read_volume
from abyssal.train.api import TrainOutcome, train

pytest.importorskip("scipy.ndimage")
pytest.importorskip("nibabel")

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "nodule" / "quickstart.yaml"
TINY = [
    "data.cube=16",
    "data.voxel_mm=2.5",
    "model.width=4",
    "train.epochs=2",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-nodule")
    options = NoduleSampleConfig(
        nodules=40,
        patients=20,
        size=24,
        new_volumes=3,
        scan_nodules=2,
        scan_slices=20,
        scan_size=64,
    )
    generate_sample(options, out)
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nodule-home")


def fit(sample: Path, home: Path, *extra: str, name: str | None = None) -> TrainOutcome:
    overrides = [f"data.path={sample}", *TINY, *extra]
    outcome = train("nodule", QUICKSTART, overrides, model_name=name, home=home)
    assert outcome is not None
    return outcome


@pytest.fixture(scope="module")
def classifier(sample: Path, home: Path) -> TrainOutcome:
    return fit(sample, home)


@pytest.fixture(scope="module")
def genesis(sample: Path, home: Path) -> TrainOutcome:
    # another seed than the classifiers': a fresh classifier does not start from its weights
    return fit(
        sample, home, "objective=genesis", "train.epochs=1", "train.seed=7", name="nodule-genesis"
    )


def loaded(ref: str, home: Path) -> LoadedModel:
    return load_model(ref, store=ModelStore(home))


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


# -- training -----------------------------------------------------------------------------------


def test_a_classifier_trains_and_registers_its_metrics(classifier: TrainOutcome) -> None:
    version, metrics = classifier.version, classifier.metrics
    assert version.ref == "nodule:1" and version.metrics == metrics
    assert 0.0 <= metrics["test_auroc"] <= 1.0 and 0.0 <= metrics["threshold_youden"] <= 1.0
    assert 0.0 <= metrics["threshold_sens95"] <= 1.0 and metrics["epochs_run"] == 2
    assert metrics["test_diameter_mae_mm"] >= 0 and "test_spiculation_mae" in metrics
    spec = version.config["model_spec"]
    assert spec["cube"] == 16 and spec["voxel_mm"] == 2.5 and spec["objective"] == "classify"
    assert "diameter_mm" in spec["attributes"] and len(spec["attribute_scale"]) == 5
    assert "malignancy_rating" in spec["attributes"] and "test_malignancy_rating_mae" in metrics
    with open(classifier.run.path / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and {r["split"] for r in rows} == {"train", "val", "test"}
    splits_of: dict[str, set[str]] = {}
    for row in rows:
        splits_of.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())  # no patient in two splits


def test_without_the_rating_head_the_other_attributes_still_train(
    sample: Path, home: Path, classifier: TrainOutcome
) -> None:
    outcome = fit(sample, home, "model.rating_head=false", name="nodule-no-rating")
    names = outcome.version.config["model_spec"]["attributes"]
    full = classifier.version.config["model_spec"]["attributes"]
    assert names == [n for n in full if n != "malignancy_rating"] and names
    assert "test_malignancy_rating_mae" not in outcome.metrics
    assert (
        outcome.metrics["test_diameter_mae_mm"] >= 0 and "test_spiculation_mae" in outcome.metrics
    )


def test_genesis_pretrains_and_a_classifier_starts_from_it(
    sample: Path, home: Path, genesis: TrainOutcome, classifier: TrainOutcome
) -> None:
    assert genesis.version.ref == "nodule-genesis:1"
    assert genesis.metrics["test_restoration_mse"] > 0 and "test_auroc" not in genesis.metrics
    assert genesis.version.config["model_spec"]["objective"] == "genesis"
    pretrained = f"model.pretrained={genesis.version.ref}"
    tuned = fit(sample, home, pretrained, "train.epochs=1", name="nodule-tuned")
    assert tuned.version.ref == "nodule-tuned:1" and 0 <= tuned.metrics["test_auroc"] <= 1
    stem = "encoder.stem.0.weight"
    start = loaded(genesis.version.ref, home).model.state_dict()[stem]
    end = loaded(tuned.version.ref, home).model.state_dict()[stem]
    fresh = loaded(classifier.version.ref, home).model.state_dict()[stem]
    # one epoch moves the pretrained stem a little; a classifier of its own starts elsewhere
    assert (end - start).abs().max() < 0.1 * start.abs().max()
    assert (fresh - start).abs().max() > 0.3 * start.abs().max()


def test_a_mask_head_model_with_test_time_views_trains_predicts_and_exports(
    sample: Path, home: Path
) -> None:
    from abyssal.optimize import optimize_version

    outcome = fit(sample, home, "model.segment=true", "model.tta=4", name="nodule-mask")
    assert 0.0 <= outcome.metrics["test_auroc"] <= 1.0
    model = loaded(outcome.version.ref, home)
    net = model.model
    assert net.segment and net.tta == 4 and net.calibration[2] == 1.0  # calibrated once
    assert "with nodule masks" in outcome.version.lineage["data"]
    predictor = model.solution.predictor(model)
    item = predictor.parse({"path": str(next((sample / "new").glob("*.npz")))})
    answer = predictor.predict([item])[0]
    assert 0.0 <= answer["malignancy_probability"] <= 1.0
    assert predictor.saliency([item]).shape == (1, 16, 16, 16) and net.tta == 4
    quick = {"batch_sizes": (1, 4), "reps": 3, "warmup": 1, "analyse_graph": False}
    report = optimize_version(
        outcome.version.ref, "cpu", ["onnx"], min_gain=-100.0, store=ModelStore(home), **quick
    )
    assert report.results[0].status == "accepted", report.results[0].reason


# -- predicting per-nodule volumes --------------------------------------------------------------


def test_a_folder_with_a_corrupt_volume_reports_it_and_predicts_the_rest(
    sample: Path, home: Path, classifier: TrainOutcome, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    shutil.copytree(sample / "new", folder)
    (folder / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip archive")
    out = tmp_path / "scores" / "predictions.csv"
    model = loaded(classifier.version.ref, home)
    report = model.solution.predict_file(model, folder, out=out)

    assert report.rows == 3 and [name for name, _ in report.bad] == ["broken"]
    assert "broken.npz" in report.bad[0][1] and "cannot be read" in report.bad[0][1]
    attributes = model.spec["attributes"]
    headers, rows = read_csv(out)
    assert headers == ["nodule_id", "malignancy_probability", "call", *attributes, "findings"]
    assert [r["nodule_id"] for r in rows] == ["new_01", "new_02", "new_03"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv"]  # no temporaries
    threshold = classifier.metrics["threshold_youden"]
    for row in rows:
        p = float(row["malignancy_probability"])
        assert row["call"] == ("malignant" if p >= threshold else "benign")
        assert all(float(row[a]) == float(row[a]) for a in attributes)  # numbers, no NaN
    # the probabilities are the model's own on the cube the spec asks for
    first = read_volume(folder / "new_01.npz")
    from abyssal.solutions.nodule.predict import NodulePredictor

    cube = NodulePredictor.from_loaded(model).cube(first, None, "new_01")
    with torch.no_grad():
        logit = model.model(torch.from_numpy(cube)[None, None])[0, 0].item()
    assert float(rows[0]["malignancy_probability"]) == pytest.approx(
        sigmoid(logit), abs=1e-4
    )  # batched vs single convolutions
    rendered = report.render()
    assert "predicted 3 nodules" in rendered and "broken" in rendered and str(out) in rendered


def test_a_table_of_volumes_with_labels_gives_an_auroc(
    sample: Path, home: Path, classifier: TrainOutcome, tmp_path: Path
) -> None:
    table = tmp_path / "cases.csv"
    table.write_text(
        f"path,malignancy\n{sample}/new/new_01.npz,5\n{sample}/new/new_02.npz,1\n"
        f"{sample}/new/new_03.npz,3\n"
    )
    model = loaded(classifier.version.ref, home)
    report = model.solution.predict_file(model, table)
    assert report.rows == 3 and not report.bad and report.output is None
    scores = [row[1] for row in report.shown]  # nodule_id, malignancy_probability, ...
    assert report.auroc == auroc([1, 0, -1], scores)


# -- predicting the candidates of a scan --------------------------------------------------------


def test_every_candidate_of_the_scan_is_scored_with_a_saliency_png(
    sample: Path, home: Path, classifier: TrainOutcome, tmp_path: Path
) -> None:
    from PIL import Image

    model = loaded(classifier.version.ref, home)
    scan, candidates = sample / "scan" / "scan.nii.gz", sample / "scan" / "candidates.csv"
    heat = tmp_path / "heat"
    report = model.solution.predict_file(model, scan, candidates=candidates, explain=heat)
    points = read_candidates(candidates)
    assert report.rows == len(points) == 4 and not report.bad
    assert report.headers[:4] == ["seriesuid", "coordX", "coordY", "coordZ"]
    assert [tuple(r[1:4]) for r in report.shown] == [c.xyz_mm for c in points]
    pngs = sorted(p.name for p in heat.iterdir())
    assert pngs == [f"scan_row_{c.row}.png" for c in sorted(points, key=lambda c: c.row)]
    for png in pngs:
        with Image.open(heat / png) as image:
            assert image.format == "PNG" and image.width > 16 and image.height > 16


def _write_dicom_and_metaimage(scan: Path, out: Path, uid: str) -> None:
    """The NIfTI scan written again as MetaImage and as a DICOM series, by SimpleITK (GDCM's
    writer switches the process to the C locale: it is put back afterwards)."""
    sitk = pytest.importorskip("SimpleITK")
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_with_sitk(sitk, scan, out, uid)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_with_sitk(sitk: Any, scan: Path, out: Path, uid: str) -> None:
    image = sitk.Cast(sitk.ReadImage(str(scan)), sitk.sitkInt16)
    sitk.WriteImage(image, str(out / "scan.mhd"))
    (out / "dicom").mkdir()
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(image.GetDepth()):
        layer = image[:, :, i]
        origin = image.TransformIndexToPhysicalPoint((0, 0, i))
        tags = {
            "0020|000e": uid,  # series instance uid
            "0020|000d": uid + ".0",
            "0008|0060": "CT",
            "0020|0032": "\\".join(map(str, origin)),  # image position (patient)
            "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7]))),
            "0020|0013": str(i),
            "0028|1052": "0",  # rescale intercept
            "0028|1053": "1",  # rescale slope
        }
        for tag, value in tags.items():
            layer.SetMetaData(tag, value)
        writer.SetFileName(str(out / "dicom" / f"{i:03d}.dcm"))
        writer.Execute(layer)


def test_a_dicom_series_and_a_metaimage_of_the_scan_score_as_the_nifti(
    sample: Path, home: Path, classifier: TrainOutcome, tmp_path: Path
) -> None:
    uid = "1.2.826.0.1.3680043.2.1125.1.7"
    scan, candidates = sample / "scan" / "scan.nii.gz", sample / "scan" / "candidates.csv"
    _write_dicom_and_metaimage(scan, tmp_path, uid)
    lines = candidates.read_text().splitlines()
    mixed = tmp_path / "candidates.csv"  # the scan's rows under its uid, and another series'
    mixed.write_text(
        "\n".join(
            [lines[0]]
            + [uid + line[line.index(",") :] for line in lines[1:]]
            + ["other" + line[line.index(",") :] for line in lines[1:]]
        )
        + "\n"
    )
    model = loaded(classifier.version.ref, home)
    reference = model.solution.predict_file(model, scan, candidates=candidates)
    probability = [r[4] for r in reference.shown]
    dicom = model.solution.predict_file(model, tmp_path / "dicom", candidates=mixed)
    assert dicom.rows == 4 and {r[0] for r in dicom.shown} == {uid}
    assert [r[4] for r in dicom.shown] == pytest.approx(probability, abs=1e-4)
    mhd = model.solution.predict_file(model, tmp_path / "scan.mhd", candidates=candidates)
    assert [r[4] for r in mhd.shown] == pytest.approx(probability, abs=1e-4)


def test_a_candidate_outside_the_scan_is_reported_and_the_rest_scored(
    sample: Path, home: Path, classifier: TrainOutcome, tmp_path: Path
) -> None:
    rows = (sample / "scan" / "candidates.csv").read_text().splitlines()
    candidates = tmp_path / "candidates.csv"
    candidates.write_text("\n".join([*rows[:3], "scan,900.0,-900.0,5000.0", *rows[3:]]) + "\n")
    model = loaded(classifier.version.ref, home)
    out = tmp_path / "scored.csv"
    report = model.solution.predict_file(
        model, sample / "scan" / "scan.nii.gz", candidates=candidates, out=out
    )
    assert report.rows == 4 and [name for name, _ in report.bad] == ["scan row 3"]
    assert "lies outside the scan" in report.bad[0][1] and "900.0" in report.bad[0][1]
    _, written = read_csv(out)
    assert len(written) == 4 and all(float(r["coordX"]) != 900.0 for r in written)


def test_a_genesis_model_refuses_to_predict(
    sample: Path, home: Path, genesis: TrainOutcome
) -> None:
    model = loaded(genesis.version.ref, home)
    with pytest.raises(DataError, match=r"objective=genesis.*model\.pretrained=nodule-genesis:1"):
        model.solution.predict_file(model, sample / "new")


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_predicts_a_scan_and_its_candidates(
    sample: Path,
    home: Path,
    classifier: TrainOutcome,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    scan, candidates = sample / "scan" / "scan.nii.gz", sample / "scan" / "candidates.csv"
    out = tmp_path / "scan-scores.csv"
    args = ["predict", "nodule", "--model", classifier.version.ref, "--scan", str(scan)]
    assert main([*args, "--candidates", str(candidates), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nodule:1: predicted 4 nodules" in printed and f"written to {out}" in printed
    headers, rows = read_csv(out)
    keys = ["seriesuid", "coordX", "coordY", "coordZ"]
    assert headers[:6] == [*keys, "malignancy_probability", "call"]
    expected = {(c.series_uid, *c.xyz_mm) for c in read_candidates(candidates)}
    got = {
        (r["seriesuid"], float(r["coordX"]), float(r["coordY"]), float(r["coordZ"])) for r in rows
    }
    assert got == expected
    probabilities = np.array([float(r["malignancy_probability"]) for r in rows])
    assert ((probabilities >= 0) & (probabilities <= 1)).all()

    assert main(args) == 1  # --scan without --candidates
    assert "--scan and --candidates go together" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("payload", "column"),
    [
        ({}, "path"),
        ({"coord": ["a", 1, 2]}, "coord"),
        ({"coord": [float("nan"), 1, 2]}, "coord"),
        ({"coord": [1, 2]}, "coord"),
        ({"spacing": [0, 1, 1]}, "spacing"),
        ({"spacing": "thin"}, "spacing"),
    ],
)
def test_a_bad_request_names_its_field(
    sample: Path, home: Path, classifier: TrainOutcome, payload: dict, column: str
) -> None:
    model = loaded(classifier.version.ref, home)
    predictor = model.solution.predictor(model)
    request = {"path": str(sample / "scan" / "scan.nii.gz"), **payload} if payload else {}
    with pytest.raises(DataError) as caught:
        predictor.parse(request)
    assert caught.value.column == column
    point = list(read_candidates(sample / "scan" / "candidates.csv")[0].xyz_mm)
    good = predictor.parse({"path": str(sample / "scan" / "scan.nii.gz"), "coord": point})
    assert good.cube.shape == (16, 16, 16) and good.keys == {"coord": point}


def test_saliency_of_an_optimized_variant_comes_from_its_eager_network(
    sample: Path, home: Path, classifier: TrainOutcome
) -> None:
    class Opaque(torch.nn.Module):  # stands for an ONNX or INT8 runner: no graph to hook
        def __init__(self, base: torch.nn.Module) -> None:
            super().__init__()
            self.base = base

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.base(x)

    model = loaded(classifier.version.ref, home)
    predictor = model.solution.predictor(model)
    item = predictor.parse({"path": str(next((sample / "new").glob("*.npz")))})
    eager = predictor.saliency([item])
    predictor.model = Opaque(model.model)
    assert np.allclose(predictor.saliency([item]), eager)
    assert predictor.predict([item])[0]["malignancy_probability"] >= 0
