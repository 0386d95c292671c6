"""Read, decode and split the image-text pairs of a retrieval run (``task: retrieval``).

The manifest is the same CSV or JSONL file as for classification (read by
:func:`~.data.read_data_manifest`, decoded by :func:`~.data.decode_kept`), one pair a row: a text
and an image; no label. Several rows may name one image (Flickr8k's five captions): rows are
grouped by image file, and the split is **by image**, seeded (``data.split_seed``): every row of
an image lands in the same split, ``data.test_frac`` of the images are the test split (with
``data.test_path``: that manifest's images, none of which may appear in ``data.path``) and
``data.val_frac`` are validation. A row without a text or without an image is a bad row
(DataError naming it, or left out and listed with ``data.skip_bad``); an audio column is ignored.

Example:
    >>> data = prepare_retrieval_data(cfg.data, cfg.model)  # doctest: +SKIP
    >>> len(data.images), [len(data.rows(s)) for s in ("train", "val", "test")]  # doctest: +SKIP
    (1000, [3500, 500, 1000])
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.splits import SPLITS, stratified_split
from abyssal.solutions.multimodal.config import MultimodalDataConfig, MultimodalModelConfig
from abyssal.solutions.multimodal.data import (
    BadRow,
    MultimodalData,
    bad_rows_note,
    data_fingerprint,
    decode_kept,
    read_data_manifest,
    text_tokenizer,
)
from abyssal.solutions.multimodal.manifest import Manifest, Sample

log = logging.getLogger(__name__)

MODALITIES = ["text", "image"]
"""What a retrieval model matches."""


def prepare_retrieval_data(
    cfg: MultimodalDataConfig, model: MultimodalModelConfig, *, progress: bool = True
) -> MultimodalData:
    """Read, decode and split by image the pairs ``cfg`` points at.

    Raises:
        ConfigError: no ``data.path``; a text model that cannot be found.
        DataError: a bad manifest, a manifest without a text or image column, a bad row (named)
            unless ``data.skip_bad``; an image in both manifests; too few images to split.
    """
    if not cfg.path:
        raise ConfigError(
            "data.path is required: a CSV or JSONL manifest, one image-text pair a row "
            f"(columns data.text_column={cfg.text_column!r}, data.image_column="
            f"{cfg.image_column!r})"
        )
    manifests = [_read(cfg, cfg.path)]
    if cfg.test_path:
        manifests.append(_read(cfg, cfg.test_path))
    bad: list[BadRow] = [(str(m.path), row, why) for m in manifests for row, why in m.bad]
    samples, in_test, unpaired = _pairs(manifests, cfg.skip_bad)
    bad += unpaired
    text_base, tokenizer = text_tokenizer(samples, model)
    inputs, kept, left_out = decode_kept(samples, [], cfg, tokenizer, progress)
    bad += left_out
    groups, images = image_groups([samples[k].image for k in kept])
    splits = split_by_image(groups, in_test[kept], cfg)
    data = MultimodalData(
        inputs, [], list(MODALITIES), splits, text_base, bad, groups=groups, images=images
    )
    data.fingerprint = data_fingerprint(data)
    data.description = _describe(data, cfg)
    return data


def _read(cfg: MultimodalDataConfig, path: str) -> Manifest:
    manifest = read_data_manifest(cfg, path, labels=False)
    lacking = [m for m in MODALITIES if m not in manifest.modalities]
    if lacking:
        column = {"text": cfg.text_column, "image": cfg.image_column}[lacking[0]]
        raise DataError(
            f"task=retrieval needs a text and an image per row, but no row has a {lacking[0]} "
            f"(column {column!r}; set data.{lacking[0]}_column= to yours)",
            path=manifest.path,
        )
    return manifest


def _pairs(
    manifests: list[Manifest], skip_bad: bool
) -> tuple[list[Sample], np.ndarray, list[BadRow]]:
    """The rows with both a text and an image (audio dropped), whether each is from the test
    manifest, and the rows lacking one (DataError unless ``skip_bad``)."""
    samples, in_test, bad = [], [], []
    audio = 0
    for k, manifest in enumerate(manifests):
        for sample in manifest.samples:
            lacking = [m for m in MODALITIES if getattr(sample, m) is None]
            if lacking:
                why = f"no {lacking[0]}; task=retrieval needs a text and an image in every row"
                if not skip_bad:
                    raise DataError(
                        f"{why} (or data.skip_bad=true to leave such rows out)",
                        path=manifest.path,
                        row=sample.row,
                    )
                bad.append((str(manifest.path), sample.row, why))
                continue
            audio += sample.audio is not None
            samples.append(replace(sample, audio=None))
            in_test.append(k > 0)
    if audio:
        log.warning(
            "task=retrieval matches texts with images: the audio of %d rows is ignored", audio
        )
    if not samples:
        raise DataError("no row has both a text and an image", path=manifests[0].path)
    return samples, np.array(in_test, dtype=bool), bad


def image_groups(images: list[Path | None]) -> tuple[np.ndarray, list[str]]:
    """(N,) int64 group per row (rows naming one file share it; numbered in order of first
    appearance) and the files, one per group.

    Example:
        >>> image_groups([Path("a.jpg"), Path("b.jpg"), Path("a.jpg")])
        (array([0, 1, 0]), ['a.jpg', 'b.jpg'])
    """
    index: dict[str, int] = {}
    groups = np.array(
        [index.setdefault(str(path), len(index)) for path in images], dtype=np.int64
    ).reshape(len(images))
    return groups, list(index)


def split_by_image(
    groups: np.ndarray, in_test: np.ndarray, cfg: MultimodalDataConfig
) -> dict[str, np.ndarray]:
    """Row indices per split, every image's rows in one split: a seeded split of the images
    (:func:`~abyssal.data.splits.stratified_split` without classes); with ``data.test_path``,
    the test manifest's images are the test split and the others are cut into train and val.

    Raises:
        DataError: an image in both manifests (named); too few images for a split.
    """
    n = int(groups.max()) + 1 if len(groups) else 0
    if not cfg.test_path:
        cut = stratified_split(
            n, None, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.split_seed,
            where=str(cfg.path), unit="images",
        )  # fmt: skip
    else:
        test, first = np.unique(groups[in_test]), np.unique(groups[~in_test])
        both = np.intersect1d(test, first)
        if len(both):
            raise DataError(
                f"{len(both)} image(s) are in both data.path and data.test_path (e.g. group "
                f"{int(both[0])}); an image must be in one split only",
                path=cfg.test_path,
            )
        if not len(first):
            raise DataError("no usable pair is left in data.path", path=cfg.path)
        part = stratified_split(
            len(first), None, val_frac=cfg.val_frac, test_frac=0.0, seed=cfg.split_seed,
            where=str(cfg.path), unit="images",
        )  # fmt: skip
        cut = {"train": first[part["train"]], "val": first[part["val"]], "test": test}
    return {s: np.flatnonzero(np.isin(groups, cut[s])).astype(np.int64) for s in SPLITS}


def _describe(data: MultimodalData, cfg: MultimodalDataConfig) -> str:
    """One line: where, pairs and images per split, bad rows."""
    assert data.groups is not None
    sizes = ", ".join(
        f"{len(np.unique(data.groups[data.splits[s]]))} {s} images ({len(data.splits[s])} texts)"
        for s in SPLITS
    )
    source = f"{cfg.path} + test {cfg.test_path}" if cfg.test_path else str(cfg.path)
    line = (
        f"{source}: {len(data.inputs)} image-text pairs of {len(data.images)} images; split by "
        f"image, seed {cfg.split_seed}: {sizes}"
    )
    return line + bad_rows_note(data.bad)
