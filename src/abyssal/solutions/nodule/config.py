"""Configuration of the lung-nodule solution; ``configs/nodule/*.yaml`` mirror these dataclasses.

Example:
    >>> cfg = NoduleConfig(data=NoduleDataConfig(path="nodules.csv"))
    >>> cfg.model.arch, cfg.data.cube, cfg.data.voxel_mm
    ('fusion', 32, 1.25)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.config import field
from abyssal.core.errors import ConfigError

ATTRIBUTES = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy_rating",
    "diameter_mm",
)
"""The LIDC radiologist ratings (and the diameter) the knowledge-guided decoder predicts when the
labels table has them. ``malignancy_rating`` is read from the ``malignancy`` column (or a
``malignancy_rating`` one): the rating itself on its 1-5 scale, nodules rated 3 included."""
RATING = "malignancy_rating"
"""The attribute that is the malignancy rating (``model.rating_head``)."""


@dataclass
class NoduleDataConfig:
    """Where the nodule volumes and their labels come from, and how cubes are cut from them."""

    path: str | None = field(
        None,
        path=True,
        help="the labels table (CSV, one row per nodule: nodule_id and malignancy or label, "
        "optional ratings, diameter_mm, patient_id, fold, spacing), or a folder holding "
        "nodules.csv (or labels.csv) and volumes/",
    )
    volumes: str | None = field(
        None,
        path=True,
        help="the folder of per-nodule volumes <nodule_id>.npz/.npy/.nii/.nii.gz/.mhd/.mha "
        "(default: volumes/ beside the table)",
    )
    label_column: str = field(
        "auto",
        help="auto: 'label' if present (benign/malignant or 0/1), else 'malignancy' (median "
        "rating 1-5: < 3 benign, > 3 malignant, = 3 unlabelled)",
    )
    cube: int = field(32, help="side of the cube the network sees, in voxels")
    voxel_mm: float = field(1.25, help="voxel size of the cube in mm (volumes are resampled to it)")
    intensity: Literal["auto", "uint8", "hu", "unit"] = field(
        "auto",
        help="how voxel values map to [0, 1]: uint8 (0-255, a window already applied); hu "
        "(Hounsfield units through data.hu_window); unit (already in [0, 1]); auto: uint8 for "
        "uint8 volumes, else hu",
    )
    hu_window: list[float] = field(
        default_factory=lambda: [-1000.0, 400.0],
        help="intensity=hu: the [low, high] HU window mapped to [0, 1] (lung window)",
    )
    test_fold: int | None = field(
        0, help="with a fold column: the fold held out for testing (null: split by seed)"
    )
    val_fold: int | None = field(
        None, help="with a fold column: the validation fold (null: the fold after test_fold)"
    )
    val_from: Literal["fold", "patients"] = field(
        "fold",
        help="with a fold column: validate on a whole fold (data.val_fold), or on data.val_frac "
        "of the other folds' patients drawn with data.split_seed (patients), so that every fold "
        "but the test fold trains",
    )
    val_frac: float = field(
        0.15, help="share of patients for validation (without folds, or with val_from=patients)"
    )
    test_frac: float = field(0.15, help="without folds: share of patients for testing")
    split_seed: int = field(0, help="seed of the patient split when there is no fold column")
    skip_bad: bool = field(
        False, help="leave out unreadable or invalid volumes (listed in the log) instead of failing"
    )
    batch_size: int = field(32, help="cubes per training batch (per process)")
    eval_batch_size: int = field(64, help="cubes per evaluation batch")
    augment: bool = field(
        True, help="random flips and 90-degree in-plane turns of the cubes in training"
    )
    rotate: bool = field(
        False,
        help="with augment: also turn each training cube about the slice axis by a random angle "
        "(any angle, resampled trilinearly; masks alike). Off by default: on LIDC it did not "
        "help (benchmarks/results/nodule_probe_rotation.md)",
    )
    shift_mm: float = field(
        0.0, help="with augment: shift each training cube in-plane by up to this many mm"
    )

    def __post_init__(self) -> None:
        if self.cube < 8:
            raise ConfigError(f"data.cube must be >= 8 voxels, got {self.cube}")
        if self.voxel_mm <= 0:
            raise ConfigError(f"data.voxel_mm must be > 0, got {self.voxel_mm}")
        half = self.cube * self.voxel_mm / 2
        if not 0 <= self.shift_mm < half:
            raise ConfigError(
                f"data.shift_mm must be >= 0 and under half the cube ({half:g} mm), "
                f"got {self.shift_mm}"
            )
        if len(self.hu_window) != 2 or not self.hu_window[0] < self.hu_window[1]:
            raise ConfigError(f"data.hu_window must be [low, high], got {self.hu_window}")
        if not 0 < self.val_frac < 1 or not 0 < self.test_frac < 1:
            raise ConfigError("data.val_frac and data.test_frac must be between 0 and 1")
        if self.val_frac + self.test_frac >= 1:
            raise ConfigError("data.val_frac + data.test_frac must leave nodules for training")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.val_from == "patients" and self.val_fold is not None:
            raise ConfigError(
                f"data.val_fold={self.val_fold} and data.val_from=patients both choose the "
                "validation split; set one"
            )
        if self.test_fold is not None and self.test_fold == self.val_fold:
            raise ConfigError(f"data.val_fold and data.test_fold are both {self.test_fold}")


@dataclass
class NoduleModelConfig:
    """The 3-D network: backbone, multi-scale fusion, knowledge-guided decoder."""

    arch: Literal["fusion", "resnet18"] = field(
        "fusion",
        help="fusion: our 3-D residual network with feature-pyramid fusion and the decoder "
        "below; resnet18: torchvision's 3-D ResNet-18 (r3d_18, one input channel), a baseline",
    )
    width: int = field(16, help="fusion: channels of the first stage (doubled per stage)")
    fusion: bool = field(
        True,
        help="fusion: combine stages 2-4 feature-pyramid style (false: the last stage only)",
    )
    knowledge: bool = field(
        True,
        help="predict the ratings and diameter, and feed them to the malignancy head (false: "
        "malignancy from the features alone, no attribute losses)",
    )
    rating_head: bool = field(
        True,
        help="with knowledge: the decoder also predicts the malignancy rating (1-5, the "
        "table's malignancy column; rated-3 nodules included, an ordinal target beside the "
        "benign/malignant label) and the malignancy head reads it with the other attributes",
    )
    dropout: float = field(0.2, help="dropout before the heads")
    segment: bool = field(
        False,
        help="a segmentation decoder trained on the volumes' nodule masks (.npz 'mask'): its "
        "predicted mask also weights a mask-guided pooling of the features the heads read",
    )
    tta: Literal[1, 2, 4, 8, 16] = field(
        1,
        help="test-time augmentation: average the outputs over this many of the cube's "
        "symmetries (flips and in-plane transposition; 1: none)",
    )
    calibrate: bool = field(
        True,
        help="after training, fit the malignancy logit's scale and offset on the validation "
        "split (Platt scaling) so probabilities are calibrated; the ranking is unchanged",
    )
    calibrate_size: bool = field(
        False,
        help="with calibrate and a mask head trained on masks: the calibration also weighs the "
        "nodule's size as the predicted mask measures it (log equivalent and largest axial "
        "diameter), weights fitted on the validation split with the scale and offset",
    )
    pretrained: str = field(
        "none",
        help="starting weights: none, a model version ref (e.g. nodule-genesis:1: its encoder "
        "and fusion are transferred), or a .pt/.pth file of such a state dict",
    )

    def __post_init__(self) -> None:
        if self.width < 4:
            raise ConfigError(f"model.width must be >= 4, got {self.width}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.tta not in (1, 2, 4, 8, 16):
            raise ConfigError(f"model.tta must be 1, 2, 4, 8 or 16, got {self.tta}")
        if self.segment and self.arch != "fusion":
            raise ConfigError("model.segment needs model.arch=fusion (it has the decoder)")


@dataclass
class NoduleLossConfig:
    """How the malignancy and attribute losses are weighted."""

    attribute_weight: float = field(
        0.5,
        help="weight of the attribute loss (mean squared error of the standardised ratings and "
        "log-diameter, over the attributes a nodule has) beside the malignancy loss",
    )
    positive_weight: str | float = field(
        "balanced",
        help="weight of malignant nodules in the malignancy loss: balanced (benign/malignant "
        "count ratio in training), or a number (1: unweighted)",
    )
    unlabelled_attributes: bool = field(
        True,
        help="also train the attribute heads on nodules with no malignancy label (rated 3)",
    )
    reader_scores: bool = field(
        False,
        help="train the malignancy head on the readers' share of malignant calls (the table's "
        "malignancy_scores: a rating above 3 counts 1, a 3 one half) instead of the median's "
        "label, rated-3 nodules included; evaluation stays on the labels",
    )
    segment_weight: float = field(
        1.0,
        help="model.segment: weight of the mask loss (cross-entropy plus soft Dice against the "
        "mask, readers' agreement as a soft target) over the nodules that have a mask",
    )

    def __post_init__(self) -> None:
        if self.attribute_weight < 0:
            raise ConfigError(f"loss.attribute_weight must be >= 0, got {self.attribute_weight}")
        if self.segment_weight < 0:
            raise ConfigError(f"loss.segment_weight must be >= 0, got {self.segment_weight}")
        weight = self.positive_weight
        if isinstance(weight, str) and weight != "balanced":
            try:
                weight = float(weight)
            except ValueError:
                raise ConfigError(
                    f"loss.positive_weight must be balanced or a number, got {weight!r}"
                ) from None
        if not isinstance(weight, str) and weight <= 0:
            raise ConfigError(f"loss.positive_weight must be > 0, got {weight}")


@dataclass
class GenesisConfig:
    """objective=genesis: the Models Genesis corruptions (Zhou et al. 2019) to undo."""

    nonlinear: float = field(0.9, help="probability of the non-linear intensity transform")
    local_shuffle: float = field(0.5, help="probability of local voxel shuffling")
    painting: float = field(0.9, help="probability of in- or out-painting")

    def __post_init__(self) -> None:
        for name in ("nonlinear", "local_shuffle", "painting"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"genesis.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class NoduleConfig:
    """The nodule solution's whole config."""

    objective: Literal["classify", "genesis"] = field(
        "classify",
        help="classify: malignancy (and attributes) from labelled nodules; genesis: "
        "self-supervised restoration pretraining (Models Genesis) on every volume, labels "
        "unused, for model.pretrained=REF later",
    )
    data: NoduleDataConfig = field(default_factory=NoduleDataConfig, help="data")
    model: NoduleModelConfig = field(default_factory=NoduleModelConfig, help="model")
    loss: NoduleLossConfig = field(default_factory=NoduleLossConfig, help="loss")
    genesis: GenesisConfig = field(default_factory=GenesisConfig, help="genesis corruptions")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=40, lr=2e-3, patience=10, weight_decay=0.05),
        help="training (the watched metric: val_auroc; val_loss for genesis)",
    )

    def __post_init__(self) -> None:
        if self.objective == "genesis" and self.model.arch != "fusion":
            raise ConfigError("objective=genesis needs model.arch=fusion (it has the decoder)")
