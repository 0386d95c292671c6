"""The lung-nodule solution: malignancy of pulmonary nodules on CT, with the attributes that
support it and a 3-D saliency map.

A 3-D residual network with feature-pyramid fusion (:mod:`abyssal.solutions.nodule.model`),
optionally pretrained without labels by Models Genesis restoration (``objective=genesis``), then
trained on labelled nodules with a knowledge-guided decoder: heads for the radiologists' ratings
and the diameter whose predictions feed the malignancy head. Inputs: per-nodule volumes with a
labels table, or whole scans with LUNA16-style candidate lists at prediction.

Example:
    >>> from abyssal.train.api import train
    >>> out = train("nodule", overrides=["data.path=lidc/"])  # doctest: +SKIP
    >>> out.metrics["test_auroc"]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from abyssal.contracts.solution import MetricLayout, Solution
from abyssal.core.errors import ConfigError, DataError
from abyssal.solutions.nodule.config import RATING, NoduleConfig
from abyssal.solutions.nodule.data import NoduleData, prepare_nodule_data
from abyssal.solutions.nodule.evaluation import calibrate, evaluate_nodule, restoration_metrics
from abyssal.solutions.nodule.model import attribute_scale, build_nodule_model, load_encoder
from abyssal.solutions.nodule.sample import NoduleSampleConfig, generate_sample
from abyssal.solutions.nodule.task import ClassifyTask, GenesisTask


def pretrained_state(cfg: NoduleConfig) -> dict[str, torch.Tensor] | None:
    """The state dict ``model.pretrained`` names (a version ref or a file), read before a run
    exists so a bad name fails early."""
    source = cfg.model.pretrained
    if source == "none":
        return None
    if Path(source).suffix in (".pt", ".pth") or Path(source).is_file():
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise ConfigError(f"model.pretrained={source}: cannot read it ({e})") from None
        return dict(state.get("state_dict", state))
    from abyssal.solutions.loading import version_state

    return version_state(source, "nodule")


class NoduleSolution(Solution):
    """Benign or malignant nodules on CT, with predicted attributes and Grad-CAM saliency."""

    name: ClassVar[str] = "nodule"
    config_cls: ClassVar[type] = NoduleConfig
    default_metric: ClassVar[str] = "val_auroc"
    sample_config_cls: ClassVar[type] = NoduleSampleConfig
    metric_layout: ClassVar[MetricLayout] = MetricLayout(
        columns=(
            ("auroc", "AUROC"),
            ("sensitivity_youden", "sens (J)"),
            ("specificity_youden", "spec (J)"),
            ("sensitivity_sens95", "sens (95)"),
            ("specificity_sens95", "spec (95)"),
            ("diameter_mae_mm", "diameter MAE mm"),
            ("spiculation_mae", "spiculation MAE"),
            ("restoration_mse", "restoration MSE"),
            ("nodules", "nodules"),
        ),
        extras=(
            "threshold_youden",
            "threshold_sens95",
            "best_epoch",
            "epochs_run",
            "train_nodules",
        ),
        headline="test_auroc",
    )
    perturbations: ClassVar[tuple[str, ...]] = ("noise", "blur", "contrast")

    # -- the training half ---------------------------------------------------------------------

    def prepare(self, cfg: NoduleConfig) -> NoduleData:
        masks = cfg.model.segment and cfg.objective == "classify"
        return prepare_nodule_data(cfg.data, progress=cfg.train.progress, masks=masks)

    def task(self, cfg: NoduleConfig, data: NoduleData) -> ClassifyTask | GenesisTask:
        spec = self.model_spec(cfg, data)
        task = (
            GenesisTask(cfg, data, spec)
            if cfg.objective == "genesis"
            else ClassifyTask(cfg, data, spec)
        )
        state = pretrained_state(cfg)
        if state is not None:
            load_encoder(build_nodule_model(cfg.model, spec), state, cfg.model.pretrained)
            task.pretrained = state
        return task

    def model_spec(self, cfg: NoduleConfig, data: NoduleData) -> dict[str, Any]:
        names = data.attribute_names if cfg.model.knowledge else []
        if not cfg.model.rating_head:
            names = [n for n in names if n != RATING]
        train = data.rows("train")
        values = data.attribute_values(train, names)
        return {
            "objective": cfg.objective,
            "classes": list(data.classes),
            "cube": data.cube,
            "voxel_mm": cfg.data.voxel_mm,
            "intensity": cfg.data.intensity,
            "hu_window": list(cfg.data.hu_window),
            "attributes": list(names),
            "attribute_scale": [list(v) for v in attribute_scale(values, names)] if names else [],
            "mask_grid": "full",
        }

    def build_model(self, cfg: NoduleConfig, spec: dict[str, Any]) -> torch.nn.Module:
        return build_nodule_model(cfg.model, spec)

    def evaluate(
        self, cfg: NoduleConfig, model: torch.nn.Module, data: NoduleData
    ) -> dict[str, float]:
        net = getattr(model, "module", model)
        spec = getattr(net, "nodule_spec", None) or self.model_spec(cfg, data)
        if spec.get("objective") == "genesis":
            return restoration_metrics(model, GenesisTask(cfg, data, spec), data)
        if spec["cube"] != data.cube:
            raise DataError(f"the model takes {spec['cube']}-voxel cubes; data.cube={data.cube}")
        if cfg.model.calibrate:  # once, after training: stored with the weights
            calibrate(model, data, cfg.data.eval_batch_size, size=cfg.model.calibrate_size)
        return evaluate_nodule(model, data, cfg.data.eval_batch_size)

    def monitor(self, cfg: NoduleConfig, data: NoduleData) -> tuple[str, Literal["max", "min"]]:
        default = "val_loss" if cfg.objective == "genesis" else self.default_metric
        metric = cfg.train.early_stopping_metric or default
        return metric, "min" if metric.endswith(("loss", "mse")) else "max"

    def headline_metric(self, cfg: NoduleConfig, data: NoduleData) -> str:
        return "test_restoration_mse" if cfg.objective == "genesis" else "test_auroc"

    def held_out(
        self, cfg: NoduleConfig, model: torch.nn.Module, data: NoduleData, *, split: str = "test"
    ) -> Any:
        """The test split's labelled nodules, in data order, scored as :meth:`evaluate` scores
        them (the model's calibrated malignancy logit through the sigmoid), as a
        ``pandas.DataFrame``: ``id`` (the nodule's id as its labels table names it), ``label``
        (1 malignant, 0 benign) and ``score`` (the probability of malignancy). Unlabelled test
        nodules are left out, as the test metrics leave them out.

        Raises:
            AbyssalError: a self-supervised encoder (``objective=genesis``), which has no
                malignancy head.
            DataError: cubes of another size than the model takes.
        """
        import pandas as pd

        from abyssal.core.errors import AbyssalError
        from abyssal.solutions.nodule.evaluation import score_cubes, sigmoid

        net = getattr(model, "module", model)
        spec = getattr(net, "nodule_spec", None) or self.model_spec(cfg, data)
        if spec.get("objective") == "genesis":
            raise AbyssalError(
                "a self-supervised encoder (objective=genesis) has no malignancy head to audit; "
                "train a classifier on it with model.pretrained=<its version>"
            )
        if spec["cube"] != data.cube:
            raise DataError(f"the model takes {spec['cube']}-voxel cubes; data.cube={data.cube}")
        rows = data.rows(split, labelled=True)
        was_training = model.training
        model.eval()
        try:
            logits = score_cubes(model, data.cubes[rows], cfg.data.eval_batch_size)[:, 0]
        finally:
            model.train(was_training)
        return pd.DataFrame(
            {
                "id": [str(data.records[r].nodule_id) for r in rows.tolist()],
                "label": data.labels[rows].astype(np.int64),
                "score": sigmoid(logits),
            }
        )

    def item_attributes(self, cfg: NoduleConfig, data: NoduleData) -> Any:
        """The labelled test nodules as :meth:`held_out` lists them, as a ``pandas.DataFrame``:
        ``id`` (the nodule's id), ``patient_id``, ``fold`` (when the table has folds), one
        column per rating and measurement the table holds (``diameter_mm``, ``subtlety``,
        ``spiculation``, ``margin``, ... as :attr:`NoduleData.attribute_names`; NaN where
        missing) and ``has_mask`` (whether its volume came with a nodule mask)."""
        import pandas as pd

        rows = data.rows("test", labelled=True)
        records = [data.records[r] for r in rows.tolist()]
        frame = pd.DataFrame(
            {
                "id": [str(r.nodule_id) for r in records],
                "patient_id": [str(r.patient) for r in records],
            }
        )
        if any(r.fold >= 0 for r in data.records):
            frame["fold"] = [int(r.fold) for r in records]
        values = data.attributes[rows].astype(np.float64)  # (n, A)
        for k, name in enumerate(data.attribute_names):
            frame[name] = values[:, k]
        frame["has_mask"] = np.asarray(data.has_mask, dtype=bool)[rows]
        return frame

    def perturb(self, cfg: NoduleConfig, data: NoduleData, perturbation: Any) -> NoduleData:
        """A copy of ``data`` whose test cubes carry ``perturbation`` (noise, blur or contrast).

        The cubes are held as uint8 (the configured intensity window mapped to 0-255), and the
        model reads them from there (divided by 255); so the test rows of a copy of that array
        are perturbed in their own 0-255 range, as volumes (blur sigma in voxels, each
        ``data.voxel_mm`` wide), then rounded and clipped to 0-255
        (:func:`abyssal.data.perturb_arrays.apply_to_rows`; cube ``r``'s noise is seeded
        ``seed + r``). Unlabelled test nodules are perturbed too; masks, labels, attributes,
        records and splits are those of ``data`` (shared, not copied); ``data`` is not changed.

        Raises:
            ConfigError: a kind volumes do not have (the message lists those they have).
        """
        from dataclasses import replace

        from abyssal.data.perturb import check_kind, perturbed_identity
        from abyssal.data.perturb_arrays import apply_to_rows

        p = check_kind(perturbation, self.perturbations, f"solution '{self.name}'")
        cubes = apply_to_rows(data.cubes, data.rows("test"), p, spatial_dims=3)
        fingerprint, description = perturbed_identity(data.fingerprint, data.description, p)
        return replace(data, cubes=cubes, fingerprint=fingerprint, description=description)

    def explain(
        self,
        cfg: NoduleConfig,
        model: torch.nn.Module,
        data: NoduleData,
        n: int,
        *,
        out: Path | None = None,
    ) -> Any:
        """Grad-CAM slices and attribute attributions of ``n`` labelled test nodules.

        Each nodule's picture (in ``out``, default a new temporary folder) shows axial, coronal
        and sagittal slices of its cube under the Grad-CAM map of the malignancy logit
        (:mod:`abyssal.solutions.nodule.explain`). With attribute heads (``model.knowledge``),
        the malignancy head reads the predicted attributes, so a nodule's scores are integrated
        gradients (Captum) of the malignancy logit over those attributes, from the training
        centre; globally, each predicted attribute is shuffled across the labelled test nodules
        and the drop of the test AUROC kept. The extras give each nodule's predicted attributes
        in words. Without attribute heads the scores and the global importance are empty.
        """
        from abyssal.contracts.explain import (
            Attribution,
            Explanations,
            eager_network,
            explain_folder,
            explained_rows,
            integrated_gradients,
            permutation_importance,
            safe_name,
            top_scores,
        )
        from abyssal.core.errors import AbyssalError
        from abyssal.nn.gradcam import GradCAM
        from abyssal.solutions.nodule.evaluation import auroc, sigmoid
        from abyssal.solutions.nodule.explain import render_saliency
        from abyssal.solutions.nodule.model import NoduleNet
        from abyssal.solutions.nodule.predict import describe_findings

        net = eager_network(model, NoduleNet, "nodule")
        if net.restore:
            raise AbyssalError(
                "a self-supervised encoder (objective=genesis) has no malignancy head to explain"
            )
        spec = getattr(net, "nodule_spec", None) or self.model_spec(cfg, data)
        names = list(spec["attributes"])[: net.attributes]
        device = next(net.parameters()).device
        size = cfg.data.eval_batch_size
        folder = explain_folder(out, self.name)

        def cubes(rows: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(data.cubes[rows]).to(device).unsqueeze(1).float() / 255.0

        def head(z: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
            return net.malignancy_head(torch.cat([feats, z], dim=1)).squeeze(1)  # (B,)

        items: list[Attribution] = []
        extras: list[str] = []
        importance: dict[str, float] = {}
        was_training = net.training
        net.eval()
        try:
            rows = explained_rows(data.rows("test", labelled=True), n)
            if len(rows):
                x = cubes(rows)  # (B, 1, S, S, S)
                with torch.no_grad(), net.single_view():
                    outputs = net(x).float().cpu().numpy()  # (B, 1 + A)
                    feats, _ = net.embed(x)
                    z = net.attribute_head(feats) if net.attribute_head is not None else None
                with net.single_view():
                    cams, _ = GradCAM(net, net.cam_layer())(x, [0] * len(rows))
                ig = None
                if z is not None:
                    ig = integrated_gradients(
                        head, z, torch.zeros_like(z), None, extra_args=(feats,)
                    )
                    ig = ig.float().cpu().numpy()  # (B, A)
                for k, r in enumerate(rows.tolist()):
                    record = data.records[r]
                    p = float(sigmoid(outputs[k, 0]))
                    values = [float(v) for v in outputs[k, 1 : 1 + len(names)]]
                    findings = describe_findings(names, values)
                    title = f"{record.nodule_id}: p(malignant) {p:.2f}" + (
                        f"; {findings}" if findings else ""
                    )
                    picture = folder / f"{k + 1:03d}_{safe_name(str(record.nodule_id))}.png"
                    cube = data.cubes[r].astype(np.float32) / 255.0
                    render_saliency(cube, cams[k].cpu().numpy(), picture, title=title)
                    scores = {} if ig is None else dict(zip(names, ig[k].tolist(), strict=True))
                    label = data.classes[int(data.labels[r])]
                    attrs = ", ".join(f"{a} {v:.2f}" for a, v in zip(names, values, strict=True))
                    extras.append(
                        f"nodule {record.nodule_id}: p(malignant) {p:.3f} (label {label}); "
                        f"{findings or 'no findings'}" + (f" ({attrs})" if attrs else "")
                    )
                    note = f"p(malignant) {p:.3f}; heat: Grad-CAM of the malignancy logit"
                    prediction = "malignant" if p >= 0.5 else "benign"
                    item = str(record.nodule_id)
                    scores = top_scores(scores)
                    items.append(Attribution(item, prediction, label, scores, picture, note))
            if net.attribute_head is None:
                extras.append("no global importance: the model has no attribute heads")
            elif not len(data.rows("test", labelled=True)):
                extras.append("no global importance: there are no labelled test nodules")
            else:
                test = data.rows("test", labelled=True)
                parts = []
                with torch.no_grad():
                    for i in range(0, len(test), size):
                        f, _ = net.embed(cubes(test[i : i + size]))
                        parts.append((f, net.attribute_head(f)))
                feats_all = torch.cat([f for f, _ in parts])
                z_all = torch.cat([a for _, a in parts]).cpu().numpy()  # (T, A)
                labels = data.labels[test]

                def score(zs: np.ndarray) -> float:
                    with torch.no_grad():
                        logits = head(torch.from_numpy(zs).to(device), feats_all)
                    return auroc(labels, logits.float().cpu().numpy())

                try:
                    importance = permutation_importance(score, names, z_all, "test_auroc")
                except ValueError as e:
                    extras.append(f"no permutation importance: {e}")
        finally:
            net.train(was_training)
        method = (
            "Grad-CAM (Selvaraju et al. 2017) of the malignancy logit; scores: integrated "
            "gradients (Captum) over the predicted attributes"
        )
        return Explanations(method, items, importance, "test_auroc", extras, folder)

    # -- the serving half ----------------------------------------------------------------------

    def example_inputs(self, cfg: NoduleConfig, spec: dict[str, Any]) -> tuple[Any, ...]:
        s = spec["cube"]
        return (torch.rand(2, 1, s, s, s),)  # (B, 1, S, S, S) in [0, 1]

    def model_inputs(
        self, cfg: NoduleConfig, data: NoduleData, batch: int, seed: int
    ) -> tuple[torch.Tensor]:
        """``batch`` validation cubes (drawn with replacement when the split is smaller)."""
        rows = data.rows("val")
        pick = np.random.default_rng(seed).choice(rows, size=batch, replace=batch > len(rows))
        return (torch.from_numpy(data.cubes[np.sort(pick)]).unsqueeze(1).float() / 255.0,)

    def decision_score(self, loaded: Any) -> Any:
        """A response's ``malignancy_probability``."""
        return lambda response: float(response["malignancy_probability"])

    def predictor(self, loaded: Any) -> Any:
        from abyssal.solutions.nodule.predict import NodulePredictor

        return NodulePredictor.from_loaded(loaded)

    def predict_file(
        self,
        loaded: Any,
        path: str | Path,
        *,
        out: str | Path | None = None,
        explain: str | Path | None = None,
        candidates: str | Path | None = None,
    ) -> Any:
        """Predict per-nodule volumes (a folder, one file, or a table of nodule_id/path), or,
        with ``candidates``, the candidates of a whole scan (``path``: a NIfTI/MetaImage file
        or a DICOM folder); ``explain``: write saliency PNGs there."""
        from abyssal.solutions.nodule.predict import predict_scan, predict_volumes

        if loaded.spec.get("objective") == "genesis":
            raise DataError(
                f"{loaded.version.ref} is a self-supervised encoder (objective=genesis): it has "
                "no malignancy head; train a classifier with model.pretrained=" + loaded.version.ref
            )
        predictor = self.predictor(loaded)
        if candidates is not None:
            return predict_scan(predictor, path, candidates, out=out, explain=explain)
        return predict_volumes(predictor, path, out=out, explain=explain)

    def generate_sample(self, options: NoduleSampleConfig, out: Path) -> list[str]:
        return generate_sample(options, out)
