"""Perturbations of test data for robustness benchmarks (``abyssal bench``).

A :class:`Perturbation` names a kind and a level; each solution's :meth:`Solution.perturb`
applies the kinds its inputs have (``Solution.perturbations``) to the test split of its prepared
data, through the functions here. Every function is seeded and pure: the same perturbation on the
same data gives the same result, and the input is never changed in place.

Kinds and what ``level`` means:

=============  ==========  ==============================================================
kind           inputs      level
=============  ==========  ==============================================================
``noise``      images      standard deviation of added Gaussian noise, as a fraction of the
               volumes     item's intensity range (max - min)
``blur``       images      Gaussian blur sigma, in pixels (voxels for volumes)
               volumes
``contrast``   images      contrast factor: ``mean + level * (x - mean)`` per item (1 = none)
               volumes
``typos``      text        fraction of words given one character-level typo
``drop_edges`` graphs      fraction of edges removed
``feature_noise`` tables   Gaussian noise of ``level`` x the column's standard deviation on
                           every numeric feature
=============  ==========  ==============================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from abyssal.core.errors import ConfigError

KINDS: dict[str, str] = {
    "noise": "Gaussian noise, level = std as a fraction of the intensity range",
    "blur": "Gaussian blur, level = sigma in pixels or voxels",
    "contrast": "contrast scaled about the mean, level = factor (1 = unchanged)",
    "typos": "character typos, level = fraction of words changed",
    "drop_edges": "edges removed, level = fraction removed",
    "feature_noise": "numeric features + Gaussian noise, level = fraction of the column's std",
}
"""Every perturbation kind, with what its level means."""


@dataclass(frozen=True)
class Perturbation:
    """One perturbation of test data: a kind from :data:`KINDS`, its level and a seed.

    Example:
        >>> Perturbation.parse("noise:0.05")
        Perturbation(kind='noise', level=0.05, seed=0)
        >>> Perturbation.parse("blur:1.5").label
        'blur 1.5'
    """

    kind: str
    level: float
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"unknown perturbation '{self.kind}'; known: {', '.join(sorted(KINDS))}"
            )
        level = float(self.level)
        if not level == level or level < 0 or level == float("inf"):  # NaN, negative, inf
            raise ConfigError(
                f"perturbation {self.kind}: level must be >= 0 and finite, not {self.level}"
            )
        if self.kind in ("typos", "drop_edges") and level > 1:
            raise ConfigError(
                f"perturbation {self.kind}: level is a fraction in [0, 1], not {level}"
            )
        object.__setattr__(self, "level", level)

    @property
    def label(self) -> str:
        """How reports name it: ``"noise 0.05"``."""
        return f"{self.kind} {self.level:g}"

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> Perturbation:
        """``"KIND:LEVEL"`` as a suite file writes it."""
        kind, sep, level = str(text).partition(":")
        if not sep:
            raise ConfigError(f"perturbation '{text}': write KIND:LEVEL, e.g. noise:0.05")
        try:
            value = float(level)
        except ValueError:
            raise ConfigError(f"perturbation '{text}': level '{level}' is not a number") from None
        return cls(kind.strip(), value, seed)


def check_kind(perturbation: Any, kinds: Sequence[str], owner: str) -> Perturbation:
    """``perturbation`` (or ``"KIND:LEVEL"`` text) as a :class:`Perturbation` of one of
    ``kinds``; ConfigError naming ``owner`` (a solution) and the kinds it has otherwise."""
    if isinstance(perturbation, str):
        perturbation = Perturbation.parse(perturbation)
    if not isinstance(perturbation, Perturbation):
        raise ConfigError(f"{owner}: expected a Perturbation, got {type(perturbation).__name__}")
    if perturbation.kind not in kinds:
        raise ConfigError(
            f"{owner} has no perturbation '{perturbation.kind}'; its kinds: {', '.join(kinds)}"
        )
    return perturbation


def perturbed_identity(
    fingerprint: str, description: str, perturbation: Perturbation
) -> tuple[str, str]:
    """The fingerprint and description of data whose test split carries ``perturbation``: a new
    16-hex fingerprint derived from the clean one, and the description with a note.

    Example:
        >>> fp, text = perturbed_identity("0123", "demo", Perturbation("blur", 1.5, 2))
        >>> len(fp), text
        (16, 'demo; test split perturbed: blur 1.5 (seed 2)')
    """
    tag = f"{fingerprint}|{perturbation.kind}|{perturbation.level!r}|{perturbation.seed}"
    note = f"test split perturbed: {perturbation.label} (seed {perturbation.seed})"
    return hashlib.sha256(tag.encode()).hexdigest()[:16], f"{description}; {note}"
