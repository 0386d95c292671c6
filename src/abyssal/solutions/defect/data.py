"""Prepared defect data: every image decoded once at the model's size, labels, a fixed split.

:func:`prepare_defect_data` lists the images of any supported layout (class folders, a CSV of
``path,label``, NEU-DET), decodes them into one uint8 array, draws a seeded split stratified by
class, and applies the few-shot or imbalanced subset to the training split only (validation and
test stay whole, so every variant is scored on the same images). The split is written into the
run folder as ``split.csv``.

Example:
    >>> data = prepare_defect_data(DefectDataConfig(path="parts/"))  # doctest: +SKIP
    >>> data.images.shape, data.classes  # doctest: +SKIP
    ((600, 1, 224, 224), ['crack', 'scratch', 'spot'])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.splits import split_file, split_names, stratified_split
from abyssal.solutions.defect.config import DefectDataConfig
from abyssal.solutions.defect.images import (
    Box,
    ImageRecord,
    list_images,
    list_unlabelled,
    load_images,
    scaled_boxes,
)
from abyssal.solutions.defect.subsets import few_shot_rows, imbalanced_rows

SPLITS = ("train", "val", "test")
CHANNELS = {"grey": 1, "colour": 3, "auto": None}


@dataclass
class DefectData:
    """Images of one dataset, decoded, labelled and split.

    Attributes:
        images: (N, C, S, S) uint8.
        labels: (N,) int64 class indices.
        classes: class names; index i is class i.
        records: where each image came from, with its annotated boxes.
        splits: ascending indices per split; ``train`` after any few-shot/imbalance subset.
        boxes: each image's boxes in the resized image's pixels.
        unlabelled: (M, C, S, S) uint8 extra images without labels (self-supervised training).
        bad: files left out as unreadable, with why.
        fingerprint, description: for the version's lineage.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    records: list[ImageRecord]
    splits: dict[str, np.ndarray]
    boxes: list[tuple[Box, ...]]
    unlabelled: np.ndarray
    bad: list[tuple[Path, str]] = field(default_factory=list)
    fingerprint: str = ""
    description: str = ""

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def rows(self, split: str) -> np.ndarray:
        return self.splits[split]

    def counts(self, split: str) -> np.ndarray:
        """Images per class in ``split``."""
        return np.bincount(self.labels[self.splits[split]], minlength=len(self.classes))

    def run_files(self) -> dict[str, str]:
        """Files written into the run folder: ``split.csv`` (path, label, split)."""
        where = split_names(len(self.records), self.splits)
        return split_file(
            ["path", "label", "split"],
            (
                [str(record.path), self.classes[label], split]
                for record, label, split in zip(self.records, self.labels, where, strict=True)
            ),
        )


def prepare_defect_data(cfg: DefectDataConfig, *, progress: bool = True) -> DefectData:
    """List, decode, split and subset the images ``cfg`` points at.

    Raises:
        ConfigError: no ``data.path``, an unknown minority class.
        DataError: unreadable images (all named) unless ``data.skip_bad_images``, a class with
            too few images for the split or the few-shot draw.
    """
    if not cfg.path:
        raise ConfigError(
            "data.path is required: a folder of class folders, a CSV of path,label or a NEU-DET "
            "folder (abyssal generate defect --out DIR writes a sample)"
        )
    listing = list_images(cfg.path, cfg.layout)
    classes = listing.classes
    if len(classes) < 2:
        raise DataError(f"found {len(classes)} class ({classes}); need at least 2", path=cfg.path)
    images, kept, bad = load_images(
        listing.records,
        size=cfg.image_size,
        channels=CHANNELS[cfg.channels],
        skip_bad=cfg.skip_bad_images,
        progress=progress,
        workers=cfg.workers,
    )
    records = [listing.records[i] for i in kept]
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[r.label] for r in records], dtype=np.int64)
    splits = stratified_split(
        len(labels),
        labels,
        val_frac=cfg.val_frac,
        test_frac=cfg.test_frac,
        seed=cfg.split_seed,
        where=str(cfg.path),
        unit="images",
    )
    splits["train"] = _subset(cfg, labels, splits["train"], classes)
    unlabelled = _unlabelled(cfg, images.shape[1], progress)
    data = DefectData(
        images=images,
        labels=labels,
        classes=classes,
        records=records,
        splits=splits,
        boxes=[scaled_boxes(r, cfg.image_size) for r in records],
        unlabelled=unlabelled,
        bad=bad,
    )
    data.fingerprint = _fingerprint(data)
    data.description = describe(data, cfg, listing.layout, len(listing.skipped))
    return data


def _subset(
    cfg: DefectDataConfig, labels: np.ndarray, train: np.ndarray, classes: list[str]
) -> np.ndarray:
    """The training rows of the variant: ``data.shots`` per class first, then the minority
    class cut to ``data.minority_ratio`` of the others (so both together stay imbalanced)."""
    if cfg.shots is not None:
        train = few_shot_rows(labels, train, cfg.shots, cfg.shots_seed)
    if cfg.minority is not None:
        if cfg.minority not in classes:
            raise ConfigError(f"data.minority '{cfg.minority}' is not a class; classes: {classes}")
        train = imbalanced_rows(
            labels,
            train,
            minority=classes.index(cfg.minority),
            ratio=cfg.minority_ratio,
            seed=cfg.split_seed,
        )
    return train


def _unlabelled(cfg: DefectDataConfig, channels: int, progress: bool) -> np.ndarray:
    if not cfg.unlabelled:
        return np.zeros((0, channels, cfg.image_size, cfg.image_size), dtype=np.uint8)
    listing = list_unlabelled(cfg.unlabelled)
    images, _, _ = load_images(
        listing.records,
        size=cfg.image_size,
        channels=channels,
        skip_bad=cfg.skip_bad_images,
        progress=progress,
        workers=cfg.workers,
    )
    return images


def _fingerprint(data: DefectData) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.images).tobytes())
    digest.update(data.labels.tobytes())
    digest.update(",".join(data.classes).encode())
    for name in SPLITS:
        digest.update(name.encode() + data.splits[name].tobytes())
    digest.update(np.ascontiguousarray(data.unlabelled).tobytes())
    return digest.hexdigest()[:16]


def describe(data: DefectData, cfg: DefectDataConfig, layout: str, skipped: int) -> str:
    """One line: where, how many images of which classes, size, split, subset."""
    sizes = {s: len(data.splits[s]) for s in SPLITS}
    colour = "colour" if data.channels == 3 else "grey"
    line = (
        f"{cfg.path} ({layout}): {len(data.labels)} {colour} images at {data.size}px, "
        f"{len(data.classes)} classes; split seed {cfg.split_seed}: {sizes['train']} train, "
        f"{sizes['val']} val, {sizes['test']} test"
    )
    if cfg.shots is not None:
        line += f"; {cfg.shots}-shot training (seed {cfg.shots_seed})"
    if cfg.minority is not None:
        line += f"; {cfg.minority} cut to {cfg.minority_ratio:g} of the others"
    if len(data.unlabelled):
        line += f"; {len(data.unlabelled)} unlabelled images"
    if data.bad:
        line += f"; {len(data.bad)} unreadable images left out"
    if skipped:
        line += f"; {skipped} non-image files skipped"
    return line
