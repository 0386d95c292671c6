"""Configuration of the defect-inspection solution; ``configs/defect/*.yaml`` mirror these
dataclasses.

Example:
    >>> cfg = DefectConfig(data=DefectDataConfig(path="parts/"))
    >>> cfg.model.backbone, cfg.loss.name
    ('resnet50', 'cross_entropy')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.config import field
from abyssal.core.errors import ConfigError


@dataclass
class DefectDataConfig:
    """Where the images come from, how they are sized, split and subset."""

    path: str | None = field(
        None,
        path=True,
        help="the labelled images: a folder with one sub-folder per class (ImageFolder), a CSV "
        "of path,label (relative paths from the CSV's folder), or a NEU-DET folder",
    )
    layout: Literal["auto", "folder", "csv", "neu_det"] = field(
        "auto", help="auto: a file is a CSV, a folder with IMAGES/ is NEU-DET, else class folders"
    )
    unlabelled: str | None = field(
        None,
        path=True,
        help="objective=simclr: a folder of extra unlabelled images, pretrained on beside the "
        "training split",
    )
    image_size: int = field(224, help="images are resized to image_size x image_size pixels")
    channels: Literal["auto", "grey", "colour"] = field(
        "auto", help="auto: colour if any training image is colour, else grey"
    )
    val_frac: float = field(0.15, help="share of each class for validation")
    test_frac: float = field(0.15, help="share of each class for testing")
    split_seed: int = field(0, help="seed of the stratified split (written to the run)")
    shots: int | None = field(
        None, help="few-shot: train on this many labelled images per class (val and test whole)"
    )
    shots_seed: int = field(0, help="seed of the few-shot draw (k=5 holds the k=1 images)")
    minority: str | None = field(
        None, help="imbalanced variant: the class cut to data.minority_ratio of the others' mean"
    )
    minority_ratio: float = field(0.05, help="imbalanced variant: the minority class's share")
    skip_bad_images: bool = field(
        False, help="leave out unreadable images (listed in the log) instead of failing"
    )
    workers: int = field(2, help="threads decoding images")
    batch_size: int = field(32, help="images per training batch (per process)")
    eval_batch_size: int = field(64, help="images per evaluation batch")
    augment: bool = field(True, help="random flips, crops and brightness/contrast in training")

    def __post_init__(self) -> None:
        if not 0 < self.val_frac < 1 or not 0 < self.test_frac < 1:
            raise ConfigError("data.val_frac and data.test_frac must be between 0 and 1")
        if self.val_frac + self.test_frac >= 1:
            raise ConfigError("data.val_frac + data.test_frac must leave images for training")
        if self.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8, got {self.image_size}")
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"data.shots must be >= 1 or null, got {self.shots}")
        if not 0 < self.minority_ratio <= 1:
            raise ConfigError(f"data.minority_ratio must be in (0, 1], got {self.minority_ratio}")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, got {self.workers}")


@dataclass
class DefectModelConfig:
    """The backbone, its starting weights and the head."""

    backbone: str = field(
        "resnet50",
        help="a torchvision classification model by name (resnet18, resnet50, efficientnet_b0, "
        "...), timm:NAME for a timm model (needs timm), or a backbone a plugin package adds "
        "(entry-point group abyssal.backbones)",
    )
    pretrained: str = field(
        "none",
        help="starting weights of the backbone: none; imagenet (torchvision's weights, "
        "downloaded once); a local .pth/.pt/.safetensors file; or a model version ref "
        "(e.g. defect-ssl:1) whose backbone is transferred",
    )
    dropout: float = field(0.2, help="dropout before the classifier")
    projection: int = field(128, help="objective=simclr: size of the projection head's output")

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.projection < 1:
            raise ConfigError(f"model.projection must be >= 1, got {self.projection}")


@dataclass
class DefectLossConfig:
    """The classification loss and how batches are drawn."""

    name: Literal["cross_entropy", "focal"] = field(
        "cross_entropy", help="cross_entropy or focal (Lin et al. 2017)"
    )
    gamma: float = field(2.0, help="focal: the focusing exponent (0: cross-entropy)")
    alpha: str | list[float] | None = field(
        None,
        help="per-class weights: null (none), balanced (inverse frequency in training), or one "
        "number per class in class order",
    )
    sampler: Literal["shuffle", "balanced"] = field(
        "shuffle", help="balanced: draw every class equally often (with replacement)"
    )
    label_smoothing: float = field(0.0, help="cross_entropy: label smoothing")
    temperature: float = field(0.2, help="objective=simclr: the NT-Xent temperature")

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {self.gamma}")
        if isinstance(self.alpha, str) and self.alpha != "balanced":
            raise ConfigError(f"loss.alpha must be null, balanced or a list, got {self.alpha!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.temperature <= 0:
            raise ConfigError(f"loss.temperature must be > 0, got {self.temperature}")


@dataclass
class DefectConfig:
    """The defect solution's whole config."""

    objective: Literal["classify", "simclr"] = field(
        "classify",
        help="classify: supervised training; simclr: self-supervised pretraining of the backbone "
        "on the images without their labels (Chen et al. 2020), for model.pretrained=REF later",
    )
    data: DefectDataConfig = field(default_factory=DefectDataConfig, help="data")
    model: DefectModelConfig = field(default_factory=DefectModelConfig, help="model")
    loss: DefectLossConfig = field(default_factory=DefectLossConfig, help="loss")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=30, lr=1e-3, patience=8, weight_decay=0.05),
        help="training (the watched metric: val_accuracy; val_knn_accuracy for simclr)",
    )
    heat_in_box: bool = field(
        True,
        help="at evaluation, score the Grad-CAM heat inside the annotated boxes over the test "
        "images that have boxes (one backward pass per image)",
    )
    baselines: bool = field(
        True,
        help="with model.pretrained: also score a prototype head (nearest class mean of the "
        "pretrained backbone's embeddings) on the same split",
    )
