"""Read, decode and split the samples of a multimodal run.

:func:`prepare_multimodal_data` reads the manifest (:func:`~.manifest.read_manifest`; with
``data.test_path`` a second manifest that is the test split), decodes every sample's text, image
and audio once (:func:`~.inputs.decode_samples`; texts with the text encoder's tokenizer), and
splits the samples with a seeded split stratified by class, written into the run folder as
``split.csv``. A modality whose encoder is ``none`` (e.g. ``model.text=none``) is ignored with
one warning; a sample left with nothing is a bad row. With ``data.skip_bad`` bad rows (of the
manifest, or files that cannot be decoded) are left out and listed in ``MultimodalData.bad``.

Example:
    >>> data = prepare_multimodal_data(cfg.data, cfg.model)  # doctest: +SKIP
    >>> data.classes, data.modalities, data.counts("train")  # doctest: +SKIP
    (['fox', 'owl'], ['text', 'image', 'audio'], array([35, 34]))
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.splits import SPLITS, split_file, split_names, stratified_split
from abyssal.solutions.multimodal.config import MultimodalDataConfig, MultimodalModelConfig
from abyssal.solutions.multimodal.inputs import DecodedInputs, InputOptions, decode_samples
from abyssal.solutions.multimodal.manifest import MODALITIES, Manifest, Sample, read_manifest

log = logging.getLogger(__name__)

BadRow = tuple[str, int, str]
"""A row left out: (manifest file, row, why)."""
BAD_SHOWN = 3
"""Bad rows named in the description."""


@dataclass
class MultimodalData:
    """The labelled samples of one run, decoded and split.

    Attributes:
        inputs: the decoded samples (token ids, pixels, log-mel spectrograms, presence flags);
            ``inputs.ids`` are the manifests' ids.
        classes: class names, sorted; index i is class i.
        modalities: the modalities at least one kept sample has, in :data:`MODALITIES` order.
        splits: ascending int64 indices into ``inputs`` per split (``train``, ``val``, ``test``).
        text_base: the text model folder whose tokenizer made the token ids, or ``None``.
        bad: rows left out (``data.skip_bad``), as (manifest file, row, why).
        fingerprint, description: for the version's lineage.
        groups: task=retrieval: (N,) int64, each row's image (index into ``images``); rows
            sharing an image (several captions) share it. ``None`` for classification.
        images: task=retrieval: the image files, one per group.
    """

    inputs: DecodedInputs
    classes: list[str]
    modalities: list[str]
    splits: dict[str, np.ndarray]
    text_base: Path | None = None
    bad: list[BadRow] = field(default_factory=list)
    fingerprint: str = ""
    description: str = ""
    groups: np.ndarray | None = None
    images: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class indices."""
        return self.inputs.labels

    def rows(self, split: str) -> np.ndarray:
        return self.splits[split]

    def counts(self, split: str) -> np.ndarray:
        """Samples per class in ``split``."""
        return np.bincount(self.labels[self.splits[split]], minlength=len(self.classes))

    def run_files(self) -> dict[str, str]:
        """``split.csv`` (id, row, label, split, and 0/1 for text, image, audio) for the run;
        task=retrieval: id, row, image, split."""
        where = split_names(len(self.inputs), self.splits)
        if self.groups is not None:
            return split_file(
                ["id", "row", "image", "split"],
                ([i, self.inputs.rows[k], self.images[self.groups[k]], where[k]]
                 for k, i in enumerate(self.inputs.ids)),
            )  # fmt: skip
        return split_file(
            ["id", "row", "label", "split", *MODALITIES],
            (
                [sample_id, self.inputs.rows[k], self.classes[self.labels[k]], where[k],
                 *self.inputs.present[k].astype(int).tolist()]
                for k, sample_id in enumerate(self.inputs.ids)
            ),
        )  # fmt: skip


def prepare_multimodal_data(
    cfg: MultimodalDataConfig, model: MultimodalModelConfig, *, progress: bool = True
) -> MultimodalData:
    """Read, decode and split the samples ``cfg`` points at.

    Args:
        cfg: the data section.
        model: the model section (which encoders exist; the text model's tokenizer).
        progress: show a progress bar while decoding.

    Raises:
        ConfigError: no ``data.path``; a text model that cannot be found.
        DataError: a bad manifest or row, or a file that cannot be decoded (named) unless
            ``data.skip_bad``; fewer than two classes; a test label with no training sample;
            too few samples to split.
    """
    if not cfg.path:
        raise ConfigError(
            "data.path is required: a CSV or JSONL manifest, one sample a row with a text, an "
            "image file and/or a WAV file, and a label"
        )
    manifests = [read_data_manifest(cfg, cfg.path)]
    if cfg.test_path:
        manifests.append(read_data_manifest(cfg, cfg.test_path))
    classes = _classes(manifests)
    bad = [(str(m.path), row, why) for m in manifests for row, why in m.bad]
    samples, in_test, ignored = _usable(manifests, model, cfg.skip_bad)
    bad += ignored
    text_base, tokenizer = text_tokenizer(samples, model)
    waveform = model.audio.startswith("pretrained:")
    inputs, kept, left_out = decode_kept(
        samples, classes, cfg, tokenizer, progress, waveform=waveform
    )
    bad += left_out
    splits = _split(inputs.labels, in_test[kept], cfg)
    present = [m for k, m in enumerate(MODALITIES) if inputs.present[:, k].any()]
    data = MultimodalData(inputs, classes, present, splits, text_base, bad)
    data.fingerprint = data_fingerprint(data)
    data.description = _describe(data, cfg)
    return data


def read_data_manifest(cfg: MultimodalDataConfig, path: str, *, labels: bool = True) -> Manifest:
    """The manifest ``path`` read with the data section's columns, format and image folder;
    ``labels=False``: the label column is not read (retrieval)."""
    return read_manifest(
        path,
        text_column=cfg.text_column,
        image_column=cfg.image_column,
        audio_column=cfg.audio_column,
        label_column=cfg.label_column if labels else None,
        id_column=cfg.id_column,
        require_label=labels,
        skip_bad=cfg.skip_bad,
        fmt=cfg.format,
        image_root=cfg.image_root,
    )


def _classes(manifests: list[Manifest]) -> list[str]:
    """The sorted labels; DataError for fewer than two, or a test label the first manifest lacks
    (naming it and its row)."""
    first = manifests[0]
    for manifest in manifests[1:]:
        for sample in manifest.samples:
            if sample.label not in first.classes:
                raise DataError(
                    f"label {sample.label!r} has no training sample: {first.path} has only "
                    f"{', '.join(first.classes)}",
                    path=manifest.path,
                    row=sample.row,
                )
    classes = sorted(set().union(*(m.classes for m in manifests)))
    if len(classes) < 2:
        raise DataError(f"found {len(classes)} class ({classes}); need at least 2", path=first.path)
    return classes


def _usable(
    manifests: list[Manifest], model: MultimodalModelConfig, skip_bad: bool
) -> tuple[list[Sample], np.ndarray, list[BadRow]]:
    """The samples without the modalities whose encoder is ``none`` (one warning each), whether
    each is from the test manifest, and the samples left with nothing (DataError unless
    ``skip_bad``)."""
    samples = original = [s for m in manifests for s in m.samples]
    in_test = np.array([k > 0 for k, m in enumerate(manifests) for _ in m.samples], dtype=bool)
    for modality in MODALITIES:
        having = sum(getattr(s, modality) is not None for s in samples)
        if model.encoder(modality) == "none" and having:
            log.warning(
                "model.%s=none: the %s of %d samples is ignored", modality, modality, having
            )
            samples = [replace(s, **{modality: None}) for s in samples]
    empty = [k for k, s in enumerate(samples) if all(getattr(s, m) is None for m in MODALITIES)]
    bad: list[BadRow] = []
    for k in empty:
        sample = original[k]
        had = " and ".join(f"{m} (model.{m}=none)" for m in MODALITIES if getattr(sample, m))
        why = f"nothing left to use: the sample has only {had}"
        if not skip_bad:
            raise DataError(
                f"{why}; set an encoder for it, or data.skip_bad=true to leave such rows out",
                path=sample.source,
                row=sample.row,
            )
        bad.append((str(sample.source), sample.row, why))
    keep = np.setdiff1d(np.arange(len(samples)), empty)
    return [samples[k] for k in keep], in_test[keep], bad


def text_tokenizer(
    samples: Sequence[Sample], model: MultimodalModelConfig
) -> tuple[Path | None, Any]:
    """The text model's folder and tokenizer, or ``(None, None)`` when no sample has text."""
    if model.text == "none" or all(s.text is None for s in samples):
        return None, None
    from abyssal.solutions.text import model as text_model  # transformers, only when needed

    try:
        folder = text_model.resolve_base(model.text)
        return folder, text_model.load_tokenizer(folder, "encoder")
    except ConfigError as e:  # the text solution names its own key
        raise ConfigError(str(e).replace("model.base", "model.text")) from None


def decode_kept(
    samples: list[Sample],
    classes: list[str],
    cfg: MultimodalDataConfig,
    tokenizer: Any,
    progress: bool,
    *,
    waveform: bool = False,
) -> tuple[DecodedInputs, np.ndarray, list[BadRow]]:
    """The decoded samples (with their own ids), which of ``samples`` they are, and the bad
    rows left out (``data.skip_bad``); ``waveform``: audio as waveforms, not log-mels."""
    # ids become positions, so the kept samples are known even when two manifests share rows
    positions = [replace(s, id=str(k)) for k, s in enumerate(samples)]
    options = replace(_options(cfg, tokenizer), waveform=waveform)
    inputs = decode_samples(
        positions, classes, options, tokenizer=tokenizer, skip_bad=cfg.skip_bad, progress=progress
    )
    kept = np.array([int(i) for i in inputs.ids], dtype=np.int64)
    left_out = np.setdiff1d(np.arange(len(samples)), kept)
    bad = [
        (str(samples[k].source), row, why)
        for k, (row, why) in zip(left_out, inputs.bad, strict=True)  # both in sample order
    ]
    inputs.ids = [samples[k].id for k in kept]
    return inputs, kept, bad


def _options(cfg: MultimodalDataConfig, tokenizer: Any) -> InputOptions:
    """``cfg``'s decoding settings, ``max_tokens`` capped at the tokenizer's stated limit."""
    options = cfg.input_options()
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 1 < limit < options.max_tokens:
        log.warning(
            "data.max_tokens=%d is over the tokenizer's limit %d; texts are cut there",
            options.max_tokens,
            limit,
        )
        options = replace(options, max_tokens=limit)
    return options


def _split(
    labels: np.ndarray, in_test: np.ndarray, cfg: MultimodalDataConfig
) -> dict[str, np.ndarray]:
    """Seeded stratified split; with ``data.test_path`` its samples are the test split and the
    first manifest's are split into train and val."""
    if not cfg.test_path:
        return stratified_split(
            len(labels),
            labels,
            val_frac=cfg.val_frac,
            test_frac=cfg.test_frac,
            seed=cfg.split_seed,
            where=str(cfg.path),
            unit="samples",
        )
    if in_test.all() or not in_test.any():
        key, path = ("path", cfg.path) if in_test.all() else ("test_path", cfg.test_path)
        raise DataError(f"no usable sample is left in data.{key}", path=path)
    first = np.flatnonzero(~in_test)
    cut = stratified_split(
        len(first), labels[first], val_frac=cfg.val_frac, test_frac=0.0, seed=cfg.split_seed,
        where=str(cfg.path), unit="samples",
    )  # fmt: skip
    return {"train": first[cut["train"]], "val": first[cut["val"]], "test": np.flatnonzero(in_test)}


def data_fingerprint(data: MultimodalData) -> str:
    """A digest of the decoded arrays, classes, ids, splits (and image groups)."""
    digest = hashlib.sha256()
    inputs = data.inputs
    arrays = ("present", "labels", "tokens", "token_lengths", "images", "mels", "mel_lengths")
    waves = ("waves", "wave_lengths") if inputs.waves is not None else ()
    for name in (*arrays, *waves):
        array = getattr(inputs, name)
        digest.update(name.encode())
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("\0".join(data.classes).encode() + b"\1" + "\0".join(inputs.ids).encode())
    for name in SPLITS:
        digest.update(name.encode() + data.splits[name].tobytes())
    if data.groups is not None:  # retrieval: which rows show one image
        digest.update(b"groups" + data.groups.tobytes())
    return digest.hexdigest()[:16]


def _describe(data: MultimodalData, cfg: MultimodalDataConfig) -> str:
    """One line: where, samples per split, per modality and per class, bad rows."""
    sizes = ", ".join(f"{len(data.splits[s])} {s}" for s in SPLITS)
    have = data.inputs.present.sum(axis=0)
    modalities = ", ".join(f"{m} {int(have[MODALITIES.index(m)])}" for m in data.modalities)
    per_class = np.bincount(data.labels, minlength=len(data.classes))
    classes = ", ".join(f"{name} {n}" for name, n in zip(data.classes, per_class, strict=True))
    source = f"{cfg.path} + test {cfg.test_path}" if cfg.test_path else str(cfg.path)
    line = (
        f"{source}: {len(data.inputs)} samples; split seed {cfg.split_seed}: {sizes}; "
        f"modalities: {modalities}; classes: {classes}"
    )
    return line + bad_rows_note(data.bad)


def bad_rows_note(bad: list[BadRow]) -> str:
    """``"; 4 bad rows left out (a.csv row 2, ... and 1 more)"``, or ``""`` without any."""
    if not bad:
        return ""
    named = ", ".join(f"{Path(f).name} row {row}" for f, row, _ in bad[:BAD_SHOWN])
    more = f" and {len(bad) - BAD_SHOWN} more" if len(bad) > BAD_SHOWN else ""
    return f"; {len(bad)} bad rows left out ({named}{more})"
