"""The defect-inspection solution: classify surface defects in images of parts.

A torchvision, timm or plugin (``abyssal.backbones``) backbone, ResNet-50 by default, fine-tuned
with cross-entropy or focal loss, from no weights, ImageNet weights, a weights file, or another
version's backbone (SimCLR pretraining with ``objective=simclr``, or supervised training on
another image set). Few-shot and imbalanced variants subset the training split; Grad-CAM
explains predictions.

Example:
    >>> from abyssal.train.api import train
    >>> overrides = ["data.path=parts/", "model.backbone=resnet18"]
    >>> out = train("defect", overrides=overrides)  # doctest: +SKIP
    >>> out.metrics["test_accuracy"]  # doctest: +SKIP
    0.98
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from abyssal.contracts.solution import MetricLayout, Solution, held_out_frame
from abyssal.core.errors import ConfigError, DataError
from abyssal.nn.backbones import is_plugin_backbone, make_backbone
from abyssal.solutions.defect.config import DefectConfig
from abyssal.solutions.defect.data import DefectData, prepare_defect_data
from abyssal.solutions.defect.evaluation import evaluate_defect, prototype_baseline
from abyssal.solutions.defect.model import (
    DefectNet,
    imagenet_weights,
    load_backbone_weights,
    read_weights_file,
)
from abyssal.solutions.defect.sample import DefectSampleConfig, generate_sample
from abyssal.solutions.defect.task import ClassifyTask, SimCLRTask


def build_defect_model(cfg: DefectConfig, spec: dict[str, Any]) -> DefectNet:
    """The network for ``cfg`` and a model spec (classes, channels), without trained weights."""
    backbone, features = make_backbone(cfg.model.backbone, spec["channels"])
    simclr = spec.get("objective", "classify") == "simclr"
    model = DefectNet(
        backbone,
        features,
        cfg.model.projection if simclr else len(spec["classes"]),
        channels=spec["channels"],
        dropout=0.0 if simclr else cfg.model.dropout,
        projection=simclr,
    )
    model.defect_spec = dict(spec)  # plain data beside the weights: scoring checks classes
    return model


def pretrained_state(cfg: DefectConfig) -> dict[str, torch.Tensor] | None:
    """The starting backbone weights ``model.pretrained`` names, read once (before a run
    exists, so a bad name fails early)."""
    source = cfg.model.pretrained
    if source == "none":
        return None
    if source == "imagenet":
        if cfg.model.backbone.startswith("timm:") or is_plugin_backbone(cfg.model.backbone):
            raise ConfigError(
                "model.pretrained=imagenet: for timm and plugin backbones pass a weights file"
            )
        return imagenet_weights(cfg.model.backbone)
    if Path(source).suffix in (".pt", ".pth", ".bin", ".safetensors") or Path(source).is_file():
        return read_weights_file(source)
    from abyssal.solutions.loading import version_state

    return version_state(source, "defect")


class DefectSolution(Solution):
    """Classify images of parts into defect classes; explain with Grad-CAM."""

    name: ClassVar[str] = "defect"
    config_cls: ClassVar[type] = DefectConfig
    default_metric: ClassVar[str] = "val_macro_f1"
    sample_config_cls: ClassVar[type] = DefectSampleConfig
    metric_layout: ClassVar[MetricLayout] = MetricLayout(
        columns=(
            ("accuracy", "accuracy"),
            ("macro_f1", "macro-F1"),
            ("knn_accuracy", "1-NN accuracy"),
            ("heat_in_box", "heat in box"),
            ("box_area", "box area"),
            ("images", "images"),
        ),
        models=(("", "network"), ("proto_", "prototype head")),
        extras=("best_epoch", "epochs_run", "train_images", "pretrained_tensors"),
        headline="test_accuracy",
    )
    perturbations: ClassVar[tuple[str, ...]] = ("noise", "blur", "contrast")

    # -- the training half ---------------------------------------------------------------------

    def prepare(self, cfg: DefectConfig) -> DefectData:
        return prepare_defect_data(cfg.data, progress=cfg.train.progress)

    def task(self, cfg: DefectConfig, data: DefectData) -> ClassifyTask | SimCLRTask:
        spec = self.model_spec(cfg, data)
        task = (
            SimCLRTask(cfg, data, spec)
            if cfg.objective == "simclr"
            else ClassifyTask(cfg, data, spec)
        )
        state = pretrained_state(cfg)
        if state is not None:
            probe = build_defect_model(cfg, spec)  # check the weights fit before a run exists
            load_backbone_weights(probe, state, source=cfg.model.pretrained)
            task.pretrained = state
        return task

    def model_spec(self, cfg: DefectConfig, data: DefectData) -> dict[str, Any]:
        return {
            "classes": list(data.classes),
            "channels": data.channels,
            "image_size": data.size,
            "objective": cfg.objective,
        }

    def build_model(self, cfg: DefectConfig, spec: dict[str, Any]) -> torch.nn.Module:
        return build_defect_model(cfg, spec)

    def evaluate(
        self, cfg: DefectConfig, model: torch.nn.Module, data: DefectData
    ) -> dict[str, float]:
        return evaluate_defect(cfg, model, data)

    def baselines(self, cfg: DefectConfig, data: DefectData) -> dict[str, float]:
        if not cfg.baselines or cfg.model.pretrained == "none" or cfg.objective != "classify":
            return {}
        return prototype_baseline(cfg, data, pretrained_state(cfg))

    def monitor(self, cfg: DefectConfig, data: DefectData) -> tuple[str, Literal["max", "min"]]:
        default = "val_knn_accuracy" if cfg.objective == "simclr" else self.default_metric
        metric = cfg.train.early_stopping_metric or default
        return metric, "min" if metric.endswith("loss") else "max"

    def headline_metric(self, cfg: DefectConfig, data: DefectData) -> str:
        return "test_knn_accuracy" if cfg.objective == "simclr" else "test_accuracy"

    def held_out(
        self, cfg: DefectConfig, model: torch.nn.Module, data: DefectData, *, split: str = "test"
    ) -> Any:
        """The test split's images, in listing order, scored as :meth:`evaluate` scores them
        (softmax of the network's logits, labels in the model's class order), as a
        ``pandas.DataFrame``.

        ``id`` is the image's path as the data lists it. Two classes: ``label`` is 1 for the
        second class in sorted order (e.g. ``scratch`` of crack/scratch) and ``score`` the
        network's probability of it. More classes: ``label`` and ``prediction`` are class names
        and ``probability`` the predicted class's probability (no ``score``: there is no one
        positive class).

        Raises:
            AbyssalError: a self-supervised encoder (``objective=simclr``), which has no class
                probabilities.
        """

        from abyssal.core.errors import AbyssalError
        from abyssal.solutions.defect.evaluation import for_model, split_outputs

        spec = getattr(getattr(model, "module", model), "defect_spec", None) or {}
        if spec.get("objective", cfg.objective) == "simclr":
            raise AbyssalError(
                "a self-supervised encoder (objective=simclr) has no class probabilities to "
                "audit; train a classifier on it with model.pretrained=<its version>"
            )
        data = for_model(model, data)
        rows = data.rows(split)
        was_training = model.training
        model.eval()
        try:
            logits = split_outputs(model, data, rows, cfg.data.eval_batch_size, "logits")
        finally:
            model.train(was_training)
        probability = torch.softmax(logits, dim=1).double().numpy()  # (n, K)
        return held_out_frame(
            [str(data.records[r].path) for r in rows.tolist()],
            data.labels[rows],
            probability,
            data.classes,
        )

    def item_attributes(self, cfg: DefectConfig, data: DefectData) -> Any:
        """The test split's images as :meth:`held_out` lists them, as a ``pandas.DataFrame``:
        ``id`` (the image's path), ``class_name`` (its class name), ``file`` (its file name),
        ``width`` and ``height`` (of the file, in pixels, read from its header; NaN when it
        cannot be read any more) and ``boxes`` (its annotated defect boxes)."""
        import pandas as pd

        from abyssal.data.images import image_size

        def size(path: Path) -> tuple[float, float]:
            try:
                return image_size(path)
            except DataError:
                return (float("nan"), float("nan"))

        records = [data.records[r] for r in data.rows("test").tolist()]
        labels = data.labels[data.rows("test")]
        sizes = [size(record.path) for record in records]
        return pd.DataFrame(
            {
                "id": [str(record.path) for record in records],
                "class_name": [data.classes[int(label)] for label in labels],
                "file": [record.path.name for record in records],
                "width": [w for w, _ in sizes],
                "height": [h for _, h in sizes],
                "boxes": [len(record.boxes) for record in records],
            }
        )

    def perturb(self, cfg: DefectConfig, data: DefectData, perturbation: Any) -> DefectData:
        """A copy of ``data`` whose test images carry ``perturbation`` (noise, blur or contrast).

        The images are held decoded, as uint8 at the model's size, and scoring reads them from
        there (:func:`~.evaluation.pixels`); so the test rows of a copy of that array are
        perturbed in their own 0-255 range (before the network's ImageNet normalisation), then
        rounded and clipped to 0-255 as a stored image would be
        (:func:`abyssal.data.perturb_arrays.apply_to_rows`; image ``r``'s noise is seeded
        ``seed + r``). Training and validation images, labels, records and splits are those of
        ``data`` (shared, not copied); ``data`` is not changed.

        Raises:
            ConfigError: a kind images do not have (the message lists those they have).
        """
        import dataclasses

        from abyssal.data.perturb import check_kind, perturbed_identity
        from abyssal.data.perturb_arrays import apply_to_rows

        p = check_kind(perturbation, self.perturbations, f"solution '{self.name}'")
        images = apply_to_rows(data.images, data.rows("test"), p, spatial_dims=2)
        fingerprint, description = perturbed_identity(data.fingerprint, data.description, p)
        return dataclasses.replace(
            data, images=images, fingerprint=fingerprint, description=description
        )

    def explain(
        self,
        cfg: DefectConfig,
        model: torch.nn.Module,
        data: DefectData,
        n: int,
        *,
        out: Path | None = None,
    ) -> Any:
        """Grad-CAM of the predicted class for ``n`` test images, as pictures in ``out``.

        Each picture (default folder: a new temporary one) shows the image with its annotated
        boxes beside the heat map over it (:mod:`abyssal.solutions.defect.explain`); an image's
        scores are the shares of its heat in the cells of a 3 x 3 grid (``"top-left"`` ..
        ``"bottom-right"``), and its note the share inside its boxes, when it has any. Pixels
        are not features to shuffle, so there is no global permutation importance; the extras
        give the mean heat in boxes over the explained images.
        """
        from abyssal.contracts.explain import (
            Attribution,
            Explanations,
            eager_network,
            explain_folder,
            explained_rows,
            grid_heat,
            safe_name,
        )
        from abyssal.core.errors import AbyssalError
        from abyssal.nn.gradcam import heat_in_boxes
        from abyssal.solutions.defect.evaluation import for_model, gradcam_maps, pixels
        from abyssal.solutions.defect.explain import render_explanation

        net = eager_network(model, DefectNet, "defect")
        if getattr(net, "defect_spec", {}).get("objective", cfg.objective) == "simclr":
            raise AbyssalError(
                "a self-supervised backbone (objective=simclr) has no classes to explain; "
                "fine-tune it first"
            )
        data = for_model(net, data)
        rows = explained_rows(data.rows("test"), n)
        folder = explain_folder(out, self.name)
        items: list[Attribution] = []
        shares: list[float] = []
        was_training = net.training
        net.eval()
        try:
            if len(rows):
                x = pixels(data, rows, next(net.parameters()).device)  # (B, C, S, S) in [0, 1]
                with torch.no_grad():
                    probs = torch.softmax(net(x).float(), dim=1).cpu()
                maps, chosen = gradcam_maps(net, x, data.size)
                for k, r in enumerate(rows.tolist()):
                    heat, c = maps[k].cpu().numpy(), int(chosen[k])
                    record, label = data.records[r], data.classes[int(data.labels[r])]
                    boxes = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in data.boxes[r]]
                    title = f"{record.path.name}: {data.classes[c]} {float(probs[k, c]):.2f}"
                    picture = folder / f"{k + 1:03d}_{safe_name(record.path.stem)}.png"
                    render_explanation(data.images[r], heat, picture, boxes=boxes, title=title)
                    note = f"p({data.classes[c]}) {float(probs[k, c]):.3f}"
                    if boxes:
                        share = heat_in_boxes(torch.from_numpy(heat), boxes)
                        area = heat_in_boxes(torch.ones(heat.shape), boxes)
                        shares.append(share)
                        note += f"; heat in boxes {share:.2f} (the boxes cover {area:.2f})"
                    scores = grid_heat(heat)
                    items.append(
                        Attribution(str(record.path), data.classes[c], label, scores, picture, note)
                    )
        finally:
            net.train(was_training)
        extras = ["no global permutation importance: pixels are not features to shuffle"]
        if any(np.isfinite(shares)):
            extras.append(
                f"mean heat in the annotated boxes over {len(shares)} explained images: "
                f"{float(np.nanmean(shares)):.3f}"
            )
        method = "Grad-CAM (Selvaraju et al. 2017) of the predicted class; scores: heat per cell"
        return Explanations(method, items, {}, "", extras, folder)

    # -- the serving half ----------------------------------------------------------------------

    def example_inputs(self, cfg: DefectConfig, spec: dict[str, Any]) -> tuple[Any, ...]:
        size = spec["image_size"]
        return (torch.rand(2, spec["channels"], size, size),)  # (B, C, S, S) in [0, 1]

    def model_inputs(
        self, cfg: DefectConfig, data: DefectData, batch: int, seed: int
    ) -> tuple[torch.Tensor]:
        """``batch`` validation images (drawn with replacement when the split is smaller)."""
        rows = data.rows("val")
        pick = np.random.default_rng(seed).choice(rows, size=batch, replace=batch > len(rows))
        return (torch.from_numpy(data.images[np.sort(pick)]).float() / 255.0,)

    def decision_score(self, loaded: Any) -> Any:
        """More classes: a response's ``probability`` (the predicted class's: the confidence an
        accept-or-review point decides on); two: the second class's probability (what
        :meth:`held_out`'s ``score`` is about), from a response's ``probabilities`` or a
        prediction file row's ``p_<class>``; ``None`` for a self-supervised encoder."""
        classes = list(loaded.spec.get("classes") or [])
        if loaded.spec.get("objective") == "simclr" or len(classes) < 2:
            return None
        if len(classes) > 2:
            return lambda response: float(response["probability"])
        positive = classes[1]

        def score(response: Any) -> float:
            if "probabilities" in response:
                return float(response["probabilities"][positive])
            return float(response[f"p_{positive}"])

        return score

    def predictor(self, loaded: Any) -> Any:
        from abyssal.solutions.defect.predict import DefectPredictor

        return DefectPredictor.from_loaded(loaded)

    def predict_file(
        self,
        loaded: Any,
        path: str | Path,
        *,
        out: str | Path | None = None,
        explain: str | Path | None = None,
    ) -> Any:
        """Predict one image, every image under a folder (streamed in batches), or the images a
        CSV's ``path`` column names; ``explain``: write Grad-CAM heat maps (PNG) there."""
        from abyssal.solutions.defect.predict import predict_images

        if loaded.spec.get("objective") == "simclr":
            raise DataError(
                f"{loaded.version.ref} is a self-supervised backbone (objective=simclr): it has "
                "no classes; fine-tune it with model.pretrained=" + loaded.version.ref
            )
        return predict_images(self.predictor(loaded), path, out=out, explain=explain)

    def generate_sample(self, options: DefectSampleConfig, out: Path) -> list[str]:
        return generate_sample(options, out)
