"""Decode the samples of a manifest into arrays a multimodal network takes: token ids, pixels and
log-mel spectrograms, each padded, with which modalities every sample has.

Text becomes token ids of the text encoder's tokenizer (special tokens added, cut at
``max_tokens`` with one warning counting the texts cut). Images become ``image_size`` square
uint8 pixels (:func:`abyssal.data.images.load_image`; grey images repeated to three channels
when colour is asked for). Audio is read as mono at ``sample_rate`` (other rates resampled, with
a note), cut at ``max_seconds``, and turned into an ``n_mels`` log-mel spectrogram
(:func:`~abyssal.solutions.multimodal.audio.log_mel`). A modality no sample has gets no array.

A file that cannot be decoded is a :class:`~abyssal.core.errors.DataError` naming the manifest,
the row and the file; with ``skip_bad`` the row is left out and listed instead, and the others
are decoded.

Example:
    >>> manifest = read_manifest("data/train.csv")  # doctest: +SKIP
    >>> inputs = decode_samples(manifest.samples, manifest.classes, InputOptions(),
    ...                         tokenizer=tokenizer)  # doctest: +SKIP
    >>> inputs.present.sum(0), inputs.images.shape  # doctest: +SKIP
    (array([812, 1000, 640]), (1000, 3, 64, 64))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.images import load_image
from abyssal.solutions.multimodal.audio import log_mel, read_audio
from abyssal.solutions.multimodal.config import InputOptions
from abyssal.solutions.multimodal.manifest import MODALITIES, Sample, located

log = logging.getLogger(__name__)

NOTES_SHOWN = 3
"""Notes (e.g. resampled audio) quoted in the one warning that counts them."""


@dataclass
class DecodedInputs:
    """The decoded samples, row-aligned.

    Attributes:
        ids: each sample's id.
        rows: each sample's manifest row.
        labels: (N,) int64 class index, -1 for a sample without a label.
        present: (N, 3) bool: which of text, image, audio (:data:`MODALITIES` order) each has.
        tokens: (N, L) int64 token ids padded with the tokenizer's pad id, or ``None`` (no text).
        token_lengths: (N,) int64, 0 where there is no text, or ``None``.
        images: (N, C, S, S) uint8, zeros where there is no image, or ``None``.
        mels: (N, n_mels, F) float32 log-mel, zeros after each clip's frames, or ``None``.
        mel_lengths: (N,) int64 frames, 0 where there is no audio, or ``None``.
        waves: (N, S) float32 waveforms at ``sample_rate``, zeros after each clip, instead of
            ``mels`` when the options ask for waveforms, or ``None``.
        wave_lengths: (N,) int64 samples, 0 where there is no audio, or ``None``.
        bad: ``(row, why)`` of the rows left out (``skip_bad``).
        notes: what was changed on the way (resampling, cut audio, cut texts), one per file.
        texts: each sample's text as read (``None`` where it has none), kept so a benchmark
            can perturb the texts and tokenize them again; ``None`` when not kept.
    """

    ids: list[str]
    rows: list[int]
    labels: np.ndarray
    present: np.ndarray
    tokens: np.ndarray | None = None
    token_lengths: np.ndarray | None = None
    images: np.ndarray | None = None
    mels: np.ndarray | None = None
    mel_lengths: np.ndarray | None = None
    waves: np.ndarray | None = None
    wave_lengths: np.ndarray | None = None
    bad: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    texts: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def decode_samples(
    samples: Sequence[Sample],
    classes: Sequence[str],
    options: InputOptions,
    *,
    tokenizer: Any = None,
    skip_bad: bool = False,
    progress: bool = False,
) -> DecodedInputs:
    """Decode every sample's text, image and audio (see the module docstring).

    Args:
        samples: rows of :func:`~abyssal.solutions.multimodal.manifest.read_manifest`.
        classes: the label names; a sample's label becomes its index (-1 without a label).
        options: sizes and rates.
        tokenizer: a ``transformers`` tokenizer; needed when a sample has text.
        skip_bad: leave out (and list) rows whose files cannot be decoded.
        progress: show a progress bar.

    Raises:
        ConfigError: text without a tokenizer.
        DataError: a file that cannot be decoded (naming the manifest, row and file) unless
            ``skip_bad``; an unknown label; no sample left.
    """
    from tqdm.auto import tqdm

    index = {name: i for i, name in enumerate(classes)}
    kept: list[tuple[Sample, np.ndarray | None, np.ndarray | None]] = []
    bad: list[tuple[int, str]] = []
    notes: list[str] = []
    pictures: dict[Path, np.ndarray] = {}  # an image several rows share is decoded once
    for sample in tqdm(samples, desc="samples", unit="sample", disable=not progress, leave=False):
        if sample.label is not None and sample.label not in index:
            raise DataError(
                f"label {sample.label!r} is not one of the classes {list(classes)}",
                path=sample.source,
                row=sample.row,
            )
        try:
            image = _image(sample, options, pictures)
            mel, found = _mel(sample, options)
        except DataError as e:
            if not skip_bad:
                raise
            bad.append((sample.row, str(e)))
            continue
        notes += found
        kept.append((sample, image, mel))
    if not kept:
        raise DataError(f"no sample left to decode ({len(bad)} bad rows)")
    if bad:
        log.warning("left out %d row(s) whose files cannot be decoded: %s", len(bad), bad[:3])
    out = DecodedInputs(
        ids=[s.id for s, _, _ in kept],
        rows=[s.row for s, _, _ in kept],
        labels=np.array([index[s.label] if s.label is not None else -1 for s, _, _ in kept]),
        present=np.array(
            [[s.text is not None, i is not None, m is not None] for s, i, m in kept], dtype=bool
        ).reshape(len(kept), len(MODALITIES)),
        bad=bad,
    )
    out.images = _stack_images([i for _, i, _ in kept], options)
    sounds = [m for _, _, m in kept]
    if options.waveform:
        out.waves, out.wave_lengths = _stack_waves(sounds)
    else:
        out.mels, out.mel_lengths = _stack_mels(sounds, options)
    texts = [s.text for s, _, _ in kept]
    out.texts = texts
    out.tokens, out.token_lengths, cut = _tokenize(texts, tokenizer, options.max_tokens)
    if cut:
        notes.append(f"{cut} text(s) longer than {options.max_tokens} tokens were cut")
    out.notes = notes
    if notes:
        shown = "; ".join(notes[:NOTES_SHOWN])
        more = f" and {len(notes) - NOTES_SHOWN} more" if len(notes) > NOTES_SHOWN else ""
        log.warning("inputs changed while decoding: %s%s", shown, more)
    return out


def _image(
    sample: Sample, options: InputOptions, seen: dict[Path, np.ndarray]
) -> np.ndarray | None:
    if sample.image is None:
        return None
    if sample.image in seen:
        return seen[sample.image]
    with located(sample, "image", sample.image):
        grey = options.image_channels == 1
        pixels = load_image(sample.image, size=options.image_size, channels=1 if grey else None)
    pixels = np.repeat(pixels, options.image_channels, axis=0) if len(pixels) == 1 else pixels
    seen[sample.image] = pixels
    return pixels


def _mel(sample: Sample, options: InputOptions) -> tuple[np.ndarray | None, list[str]]:
    """The clip's log-mel (n_mels, F), or its waveform (S,) with ``options.waveform``."""
    if sample.audio is None:
        return None, []
    with located(sample, "audio", sample.audio):
        wave, found = read_audio(
            sample.audio, sample_rate=options.sample_rate, max_seconds=options.max_seconds
        )
    notes = [f"row {sample.row}, audio {sample.audio}: {note}" for note in found]
    if options.waveform:
        return wave.astype(np.float32), notes
    mel = log_mel(torch.from_numpy(wave)[None], options.sample_rate, options.n_mels)[0]
    return mel.numpy(), notes


def _stack_images(images: list[np.ndarray | None], options: InputOptions) -> np.ndarray | None:
    if all(i is None for i in images):
        return None
    s, c = options.image_size, options.image_channels
    out = np.zeros((len(images), c, s, s), dtype=np.uint8)
    for k, pixels in enumerate(images):
        if pixels is not None:
            out[k] = pixels
    return out


def _stack_mels(
    mels: list[np.ndarray | None], options: InputOptions
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if all(m is None for m in mels):
        return None, None
    lengths = np.array([0 if m is None else m.shape[1] for m in mels], dtype=np.int64)
    out = np.zeros((len(mels), options.n_mels, int(lengths.max())), dtype=np.float32)
    for k, mel in enumerate(mels):
        if mel is not None:
            out[k, :, : mel.shape[1]] = mel
    return out, lengths


def _stack_waves(waves: list[np.ndarray | None]) -> tuple[np.ndarray | None, np.ndarray | None]:
    if all(w is None for w in waves):
        return None, None
    lengths = np.array([0 if w is None else len(w) for w in waves], dtype=np.int64)
    out = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
    for k, wave in enumerate(waves):
        if wave is not None:
            out[k, : len(wave)] = wave
    return out, lengths


def tokenize_texts(
    texts: list[str | None], tokenizer: Any, limit: int
) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """The texts as :func:`decode_samples` tokenizes them: padded ids (N, L), lengths (N,),
    0 where there is no text, and how many texts were cut at ``limit`` tokens; ``None`` arrays
    when no text is given."""
    return _tokenize(texts, tokenizer, limit)


def _tokenize(
    texts: list[str | None], tokenizer: Any, limit: int
) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """Padded ids, lengths and how many texts were cut; ``None`` arrays without text."""
    have = [k for k, t in enumerate(texts) if t is not None]
    if not have:
        return None, None, 0
    if tokenizer is None:
        raise ConfigError("the samples have text but no tokenizer was given")
    wanted = [texts[k] for k in have]
    encoded = tokenizer(wanted, add_special_tokens=True, verbose=False)
    full = [list(ids) for ids in encoded["input_ids"]]
    over = [i for i, ids in enumerate(full) if len(ids) > limit]
    if over:  # the tokenizer's own truncation keeps its special tokens
        shorter = tokenizer([wanted[i] for i in over], truncation=True, max_length=limit)
        for i, ids in zip(over, shorter["input_ids"], strict=True):
            full[i] = list(ids)
    lengths = np.zeros(len(texts), dtype=np.int64)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = np.full((len(texts), max(len(ids) for ids in full)), pad, dtype=np.int64)
    for k, ids in zip(have, full, strict=True):
        tokens[k, : len(ids)] = ids
        lengths[k] = len(ids)
    return tokens, lengths, len(over)
