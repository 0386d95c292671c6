"""NEU-DET defect classification: a ResNet from no weights, SimCLR pretraining and fine-tuning,
focal loss, few-shot, class imbalance, and the best classifier on a small CPU (ONNX, INT8).

Every run trains through ``abyssal.train.api.train("defect", ...)`` on NEU-DET (``--data``, layout
``neu_det``) with one fixed split (data.split_seed=0, 15% validation, 15% test; the few-shot and
imbalanced variants subset the training split only), in a temporary abyssal home or ``--home``.
Parts (``--parts``, all by default), each written to the results as soon as it ends:

- ``scratch``: ``--backbone`` from no weights, cross-entropy (configs/defect/neu_det.yaml).
- ``ssl``: SimCLR on the training images without labels (configs/defect/simclr.yaml), then the
  staged fine-tune from it with cross-entropy (configs/defect/finetune.yaml), which also scores
  the prototype head of the SimCLR backbone (``proto_*``). ``--ssl-model REF`` reuses a SimCLR
  version instead of pretraining.
- ``focal``: that fine-tune with focal loss (from no weights without an SSL backbone).
- ``fewshot``: the fine-tune with ``data.shots=k`` for each k of ``--shots``.
- ``imbalance``: ``--minority`` cut to 5% of the other classes' mean; cross-entropy and focal.
- ``edge``: the full-split classifier with the best validation accuracy (or ``--edge-model``)
  through ``optimize_version`` (ONNX FP32, static and dynamic INT8), then PyTorch FP32 and every
  variant registered, on ``--threads`` CPU threads: images/s and per-image p50/p99 latency at
  batch 1 and ``--edge-batch`` over the real test images, size, test accuracy, agreement with FP32.

Usage:
    python benchmarks/defect.py --quick                 # CPU smoke run, tiny, a temporary folder
    python benchmarks/defect.py --device cuda --home H --commit SHA --edge-export DIR
    python benchmarks/defect.py --parts edge --edge-model DIR --merge defect_cuda.json

``--edge-export DIR`` writes the chosen classifier's weights (float16, in pieces of at most 15 MiB,
so a ResNet-50 comes back from a device call in one go) and metadata, and ``--edge-model DIR``
registers them (back in float32) in this run's store, so that the edge part can run on another
machine than the training; it then measures the rounded model itself. ``--merge FILE`` keeps the
parts of an earlier result (with their environment).
Writes ``benchmarks/results/defect_<cuda|cpu>.json`` and ``.md`` (``--out`` overrides). CPU
timings are only as good as the machine is quiet: each part records the load average, and two
PyTorch threads sharing two busy cores run many times slower (ONNX Runtime suffers less).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from environment import env_line, environment, md_table, write_result
from environment import number_cell as _f
from environment import target_row as _target

PACKAGES = ("torch", "torchvision", "onnxruntime")  # the versions the results name
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ROOT / "configs" / "defect"
PARTS = ("scratch", "ssl", "focal", "fewshot", "imbalance", "edge")
EDGE_METHODS = ("onnx", "onnx-int8-static", "onnx-int8-dynamic")
# (part, its record's key, label) of the classifiers trained on the whole training split
CLASSIFIERS = (("scratch", "run", "scratch"), ("ssl", "finetune", "SSL fine-tune"),
               ("focal", "run", "focal"))  # fmt: skip
QUICK = {"backbone": "resnet18", "image_size": 64, "max_steps": 3, "ssl_steps": 2,
         "shots": [1, 5], "edge_reps": 5, "edge_warmup": 1, "edge_measure_s": 2.0}  # fmt: skip
QUICK_SUBSET = 5  # --quick: every training part sees this many images per class
MIN_CALLS = 5  # timed calls per measurement, whatever the time budget
# the prototype head depends on the backbone and the training images only: the SSL fine-tune and
# few-shot runs score it; the focal and imbalance runs skip it
NO_PROTOTYPES = "baselines=false"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Bench:
    """One benchmark invocation: its arguments, store, results so far and the SSL backbone."""

    args: argparse.Namespace
    home: Path
    out: Path
    result: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    ssl_ref: str | None = None

    def save(self) -> None:
        """Write the results so far (JSON and markdown), silently."""
        self.result["targets"] = targets(self.result)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.with_suffix(".json").write_text(json.dumps(self.result, indent=2))
        self.out.with_suffix(".md").write_text(markdown(self.result))


# ---------------------------------------------------------------- training runs


def set_override(overrides: list[str], key: str, value: Any) -> list[str]:
    """``overrides`` with ``key`` set to ``value`` in place of any earlier setting of it
    (``None``: removed)."""
    kept = [o for o in overrides if o.split("=", 1)[0] != key]
    return kept if value is None else [*kept, f"{key}={value}"]


def base_overrides(args: argparse.Namespace, *, ssl: bool = False) -> list[str]:
    """What every run shares: the data and its fixed split, the backbone, the device, and the
    flags' batch, epochs and steps (SimCLR's own with ``ssl``)."""
    out = [
        f"data.path={args.data}",
        "data.layout=neu_det",
        "data.split_seed=0",
        "data.val_frac=0.15",
        "data.test_frac=0.15",
        f"data.image_size={args.image_size}",
        f"model.backbone={args.backbone}",
        f"data.workers={min(8, os.cpu_count() or 1)}",  # decoding threads
        f"train.device={args.device}",
        "train.deterministic=false",
        "train.progress=false",
    ]
    epochs, steps = (args.ssl_epochs, args.ssl_steps) if ssl else (args.epochs, args.max_steps)
    batch = args.ssl_batch if ssl else args.batch
    for key, value in (
        ("data.batch_size", batch),
        ("train.epochs", epochs),
        ("train.max_steps", steps),
    ):
        if value is not None:
            out.append(f"{key}={value}")
    if args.quick:  # a few images per class, one validation at the end
        out += [f"data.shots={QUICK_SUBSET}", f"train.eval_every_steps={steps}"]
    return out


def fit(bench: Bench, label: str, config: Path, overrides: list[str], name: str) -> dict:
    """Train one model version; what it was trained with, how long it took and its metrics."""
    from abyssal.train.api import train

    log(f"{label}: training {name} ({config.name}, {len(overrides)} overrides)")
    start = time.perf_counter()
    out = train("defect", config, overrides, model_name=name, home=bench.home)
    wall = time.perf_counter() - start
    history = out.fit.history if out.fit is not None else []
    record = {
        "ref": out.version.ref,
        "config": str(config.relative_to(ROOT)),
        "overrides": overrides,
        "full_split": not any(o.startswith(("data.shots=", "data.minority=")) for o in overrides),
        "wall_s": round(wall, 1),
        "epochs_run": out.metrics.get("epochs_run"),
        "steps": history[-1].get("step") if history else None,
        "data": out.version.lineage.get("data"),
        "metrics": out.metrics,
    }
    shown = ("test_accuracy", "test_macro_f1", "proto_test_accuracy", "test_knn_accuracy")
    scores = ", ".join(f"{k} {out.metrics[k]:.4f}" for k in shown if k in out.metrics)
    log(f"{label}: {record['ref']} in {wall:.0f} s, {record['steps']} steps; {scores}")
    return record


def fine_tune_start(bench: Bench) -> tuple[Path, list[str], str]:
    """Where the later classifiers start: the staged fine-tune from the SimCLR backbone when
    there is one (and not ``--no-ssl-start``), else the scratch config from no weights."""
    if bench.ssl_ref and not bench.args.no_ssl_start:
        start = [f"model.pretrained={bench.ssl_ref}"]
        return CONFIGS / "finetune.yaml", start, f"SimCLR {bench.ssl_ref}, staged fine-tune"
    return CONFIGS / "neu_det.yaml", ["model.pretrained=none"], "no weights"


def part_scratch(bench: Bench, rec: dict) -> None:
    overrides = [*base_overrides(bench.args), "model.pretrained=none", "loss.name=cross_entropy"]
    rec["run"] = fit(bench, "scratch", CONFIGS / "neu_det.yaml", overrides, "defect-scratch")


def part_ssl(bench: Bench, rec: dict) -> None:
    args = bench.args
    if args.ssl_model:
        rec["simclr"] = stored_run(bench, args.ssl_model)
    else:
        overrides = ["objective=simclr", *base_overrides(args, ssl=True)]
        rec["simclr"] = fit(
            bench, "ssl: SimCLR", CONFIGS / "simclr.yaml", overrides, "defect-simclr"
        )
    bench.ssl_ref = rec["simclr"]["ref"]
    bench.save()
    overrides = [
        *base_overrides(args),
        f"model.pretrained={bench.ssl_ref}",
        "loss.name=cross_entropy",
    ]
    rec["finetune"] = fit(
        bench, "ssl: fine-tune", CONFIGS / "finetune.yaml", overrides, "defect-finetune"
    )


def stored_run(bench: Bench, ref: str) -> dict:
    """An existing version (``--ssl-model``) recorded like a run of this benchmark."""
    from abyssal.core.store import ModelStore

    mv = ModelStore(bench.home).resolve(ref)
    log(f"ssl: reusing {mv.ref} (test_knn_accuracy {mv.metrics.get('test_knn_accuracy')})")
    return {
        "ref": mv.ref,
        "reused": True,
        "config": None,
        "overrides": None,
        "wall_s": None,
        "data": mv.lineage.get("data"),
        "metrics": dict(mv.metrics),
    }


def part_focal(bench: Bench, rec: dict) -> None:
    config, start, rec["start"] = fine_tune_start(bench)
    overrides = [*base_overrides(bench.args), *start, "loss.name=focal", NO_PROTOTYPES]
    rec["run"] = fit(bench, "focal", config, overrides, "defect-focal")


def part_fewshot(bench: Bench, rec: dict) -> None:
    config, start, rec["start"] = fine_tune_start(bench)
    rec["runs"] = {}
    for k in bench.args.shots:
        overrides = [*base_overrides(bench.args), *start, "loss.name=cross_entropy"]
        overrides = set_override(overrides, "data.shots", k)
        rec["runs"][str(k)] = fit(bench, f"fewshot k={k}", config, overrides, f"defect-shots{k}")
        bench.save()


def part_imbalance(bench: Bench, rec: dict) -> None:
    args = bench.args
    config, start, rec["start"] = fine_tune_start(bench)
    rec.update(minority=args.minority, ratio=0.05, runs={})
    base = [
        *base_overrides(args),
        *start,
        f"data.minority={args.minority}",
        "data.minority_ratio=0.05",
        NO_PROTOTYPES,
    ]
    # no few-shot subset here, even with --quick: data.shots is drawn after the minority cut and
    # would make every class equally large again
    base = set_override(base, "data.shots", None)
    for loss in ("cross_entropy", "focal"):
        name = f"defect-imbalance-{loss.replace('_', '-')}"
        overrides = [*base, f"loss.name={loss}"]
        rec["runs"][loss] = fit(bench, f"imbalance {loss}", config, overrides, name)
        bench.save()


# ---------------------------------------------------------------- edge: CPU inference


def best_classifier(parts: dict) -> tuple[str, dict] | None:
    """The scratch / SSL fine-tune / focal classifier with the best validation accuracy
    (validation macro-F1 breaks ties), and its label."""
    return max(classifier_runs(parts), key=lambda item: _validation_score(item[1]), default=None)


def _validation_score(record: dict) -> tuple[float, float]:
    m = record["metrics"]
    return m["val_accuracy"], m.get("val_macro_f1", 0.0)


def edge_model(bench: Bench, store: Any) -> tuple[str, str]:
    """The version the edge part measures, and why that one."""
    given = bench.args.edge_model
    if given and Path(given).is_dir():
        return import_version(store, Path(given)), f"imported from {given}"
    if given:
        return store.resolve(given).ref, "--edge-model"
    best = best_classifier(bench.result["parts"])
    if best is None:
        raise RuntimeError("edge: no scratch/ssl/focal classifier here; pass --edge-model REF|DIR")
    label, record = best
    return record["ref"], (
        f"{label}: best validation accuracy ({record['metrics']['val_accuracy']:.4f}) of the "
        "scratch, SSL fine-tune and focal classifiers"
    )


PIECE_BYTES = 15 * 2**20
"""``--edge-export`` splits the weights into files this large at most: the device returns files of
at most 16 MiB, 64 MiB per call, so a float16 ResNet-50 (47 MB) comes back in one call."""


def export_version(store: Any, ref: str, folder: Path) -> None:
    """Write ``ref``'s weights as float16 safetensors in pieces (``weights.partNN``) and its
    metadata (``version.json``, with each piece's SHA-256) into ``folder``, for
    :func:`import_version` on another machine. Float16 halves what travels; the importing side
    measures the rounded model's own accuracy, so every figure it reports is of that model."""
    from safetensors.torch import save

    mv = store.resolve(ref)
    folder.mkdir(parents=True, exist_ok=True)
    state = store.load_weights(mv)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = save({k: v.contiguous() for k, v in half.items()})
    pieces = []
    for i in range(0, len(blob), PIECE_BYTES):
        name = f"weights.part{i // PIECE_BYTES:02d}"
        (folder / name).write_bytes(blob[i : i + PIECE_BYTES])
        pieces.append(
            {"file": name, "sha256": hashlib.sha256(blob[i : i + PIECE_BYTES]).hexdigest()}
        )
    meta = {
        "ref": mv.ref,
        "name": mv.name,
        "solution": mv.solution,
        "config": mv.config,
        "metrics": mv.metrics,
        "dtype": "float16",
        "pieces": pieces,
        "lineage": {k: mv.lineage.get(k) for k in ("data", "data_fingerprint")},
    }
    (folder / "version.json").write_text(json.dumps(meta, indent=2))
    size = len(blob) / 2**20
    log(f"exported {mv.ref} to {folder}: {size:.1f} MiB float16 in {len(pieces)} pieces")


def import_version(store: Any, folder: Path) -> str:
    """Register the version :func:`export_version` wrote (each piece's SHA-256 checked; the
    weights back in float32) in ``store``. The pieces may sit in ``folder`` or any folder below."""
    from safetensors.torch import load

    meta = json.loads((folder / "version.json").read_text())
    parts = []
    for piece in meta["pieces"]:
        found = sorted(folder.rglob(piece["file"]))
        if not found:
            raise RuntimeError(f"{folder}: piece {piece['file']} is missing")
        data = found[0].read_bytes()
        if hashlib.sha256(data).hexdigest() != piece["sha256"]:
            raise RuntimeError(f"{found[0]}: SHA-256 differs from the export's (truncated?)")
        parts.append(data)
    state = load(b"".join(parts))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    lineage = {k: v for k, v in meta["lineage"].items() if v is not None}
    mv = store.register(
        meta["name"],
        state,
        solution=meta["solution"],
        config=meta["config"],
        metrics=meta["metrics"],
        lineage={**lineage, "imported_from": f"{meta['ref']} (weights rounded to float16)"},
    )
    log(f"edge: imported {meta['ref']} from {folder} as {mv.ref} (float16-rounded weights)")
    return mv.ref


def export_chosen(bench: Bench, folder: Path) -> bool:
    """``--edge-export``: the edge part's model written to ``folder``; recorded in the result."""
    from abyssal.core.store import ModelStore

    try:
        store = ModelStore(bench.home)
        ref, why = edge_model(bench, store)
        export_version(store, ref, folder)
        bench.result["edge_export"] = {"ref": ref, "chosen": why, "folder": str(folder)}
        return True
    except Exception as exc:
        traceback.print_exc()
        bench.result["edge_export"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        return False


def load_on_cpu(store: Any, ref: str, threads: int) -> torch.nn.Module:
    """``ref`` on the CPU; an ONNX variant with ``threads`` intra-op threads (``load_model``
    leaves ONNX Runtime at its default, which ignores ``torch.set_num_threads``)."""
    from abyssal.nn.variants import LoadContext, load_variant
    from abyssal.solutions.loading import load_model

    mv = store.resolve(ref)
    opt = mv.config.get("optimization")
    if opt is None:
        return load_model(ref, store=store, device="cpu").model
    parent = load_model(opt["parent"], store=store, device="cpu")
    sol, cfg, spec = parent.solution, parent.cfg, parent.spec
    recipe = dict(opt["recipe"])
    if opt["variant"] == "onnx":
        recipe["intra_op_num_threads"] = threads
    files = {a.name: store.artifact_path(mv, a.name) for a in mv.artifacts}
    ctx = LoadContext(
        torch.device("cpu"), lambda: sol.example_inputs(cfg, spec), sol.input_axes(cfg, spec)
    )
    return load_variant(parent.model, opt["variant"], recipe, files, ctx).eval()


def test_split(store: Any, ref: str, data: Path) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """The test images of ``ref``'s split ((N, C, S, S) float in [0, 1]), labels, classes."""
    from abyssal.solutions.defect.data import prepare_defect_data
    from abyssal.solutions.loading import load_model

    cfg = load_model(ref, store=store).cfg.data
    prepared = prepare_defect_data(replace(cfg, path=str(data)), progress=False)
    rows = prepared.rows("test")
    images = torch.from_numpy(prepared.images[rows]).float().div_(255.0)
    return images, prepared.labels[rows], prepared.classes


@torch.inference_mode()
def probabilities(model: torch.nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
    """(N, K) class probabilities of ``images``, ``batch`` at a time."""
    parts = [model(images[i : i + batch]).float() for i in range(0, len(images), batch)]
    return torch.softmax(torch.cat(parts), dim=1)


@torch.inference_mode()
def time_calls(
    model: Any, images: torch.Tensor, batch: int, warmup: int, repeats: int, budget_s: float
) -> dict:
    """Images/s and per-image latency (each call's seconds / batch) over consecutive batches of
    ``images``: ``warmup`` untimed calls, then up to ``repeats`` timed ones (at least
    :data:`MIN_CALLS`, fewer than ``repeats`` once ``budget_s`` is spent)."""
    count = max(1, len(images) // batch)
    chunks = [images[i * batch : (i + 1) * batch] for i in range(count)]
    for i in range(warmup):
        model(chunks[i % count])
    per_image, spent, seen = [], 0.0, 0
    for i in range(repeats):
        x = chunks[(warmup + i) % count]
        start = time.perf_counter()
        model(x)
        took = time.perf_counter() - start
        per_image.append(took / len(x))
        spent, seen = spent + took, seen + len(x)
        if spent > budget_s and i + 1 >= MIN_CALLS:
            break
    ms = 1000 * np.array(per_image)
    return {
        "batch": batch,
        "calls": len(ms),
        "images_per_s": seen / spent,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def agreement(reference: torch.Tensor, probs: torch.Tensor) -> dict:
    """Share of rows whose top class matches ``reference``'s, largest |probability difference|."""
    return {
        "top1_agreement": float((reference.argmax(1) == probs.argmax(1)).float().mean()),
        "max_abs_prob_diff": float((reference - probs).abs().max()),
    }


def guard_verdict(row: dict, eager_p50: float | None) -> str:
    """What optimize's default guard (5% faster p50 at batch 1, validation metric at most 0.01
    lower) decides from optimize's own measurements."""
    if row["status"] == "failed" or eager_p50 is None or row["p50_ms@1"] is None:
        return "failed"
    if row["p50_ms@1"] >= 0.95 * eager_p50:
        return "reject (not faster)"
    delta = row["metric_delta"]
    return "reject (metric)" if delta is not None and delta < -0.01 else "accept"


def optimize_summary(report: Any) -> dict:
    """Optimize's verdicts and its own timings (ONNX Runtime at its default thread count)."""
    base = report.baseline.timings.get(1)
    eager_p50 = base.p50_ms if base else None
    rows = []
    for r in report.results:
        t = r.timings.get(1)
        row = {
            "method": r.method,
            "status": r.status,
            "reason": r.reason,
            "note": r.note,
            "registered": r.registered,
            "p50_ms@1": t.p50_ms if t else None,
            "metric_delta": r.metric_delta,
            "max_abs_diff": r.max_abs_diff,
            "size_bytes": r.size_bytes,
        }
        row["default_guard"] = guard_verdict(row, eager_p50)
        rows.append(row)
    return {"metric": report.metric, "eager_p50_ms@1": eager_p50, "candidates": rows}


def part_edge(bench: Bench, rec: dict) -> None:
    from abyssal.core.store import ModelStore
    from abyssal.optimize.api import optimize_version

    args = bench.args
    torch.set_num_threads(args.threads)
    store = ModelStore(bench.home)
    ref, rec["chosen"] = edge_model(bench, store)
    rec.update(model=ref, threads=args.threads, batch_sizes=[1, args.edge_batch], variants=[])
    log(f"edge: optimizing {ref} for the CPU ({', '.join(EDGE_METHODS)}), {args.threads} threads")
    # the guard wide open (any speed, any metric loss up to 1): every variant that builds is
    # registered and measured below; what the default guard decides is derived in the report
    options = {"batch_sizes": [1, args.edge_batch], "target_batch": 1, "reps": args.edge_reps,
               "warmup": args.edge_warmup, "budget_s": args.edge_measure_s,
               "analyse_graph": False, "tolerance": 1.0}  # fmt: skip
    rec["optimize_call"] = {"methods": EDGE_METHODS, "keep": "all", "min_gain": "-inf", **options}
    report = optimize_version(
        ref,
        "cpu",
        list(EDGE_METHODS),
        keep="all",
        store=store,
        overrides=[f"data.path={args.data}"],
        log=lambda line: log(f"edge: optimize: {line}"),
        min_gain=-math.inf,
        **options,
    )
    rec["optimize"] = optimize_summary(report)
    bench.save()
    images, labels, classes = test_split(store, ref, args.data)
    registered = [(r.method, r.registered) for r in report.results if r.registered]
    reference = None
    for method, version in [("pytorch-fp32", ref), *registered]:
        row = measure_variant(store, method, version, images, labels, classes, args)
        probs = row.pop("probs")
        reference = probs if reference is None else reference  # PyTorch FP32 comes first
        row.update(agreement(reference, probs))
        rec["variants"].append(row)
        bench.save()


def measure_variant(
    store: Any,
    method: str,
    ref: str,
    images: torch.Tensor,
    labels: np.ndarray,
    classes: list[str],
    args: argparse.Namespace,
) -> dict:
    """One variant on the CPU: its files' size, test metrics and timings at each batch size."""
    from abyssal.nn.metrics import classification_metrics

    mv = store.resolve(ref)
    model = load_on_cpu(store, ref, args.threads)
    size = sum(store.artifact_path(mv, a.name).stat().st_size for a in mv.artifacts)
    probs = probabilities(model, images, args.edge_batch)
    scores = classification_metrics(labels, probs, classes)
    row = {
        "method": method,
        "ref": mv.ref,
        "size_bytes": size,
        "probs": probs,
        "test_accuracy": scores["accuracy"],
        "test_macro_f1": scores["macro_f1"],
        "timings": {},
    }
    for batch in (1, args.edge_batch):
        t = time_calls(model, images, batch, args.edge_warmup, args.edge_reps, args.edge_measure_s)
        row["timings"][str(batch)] = t
        log(
            f"edge: {method} ({mv.ref}) @{batch}: {t['images_per_s']:.1f} images/s, p50 "
            f"{t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms per image ({t['calls']} calls)"
        )
    log(f"edge: {method}: test accuracy {row['test_accuracy']:.4f}, {size / 1e6:.1f} MB")
    return row


# ---------------------------------------------------------------- targets and report


def classifier_runs(parts: dict) -> list[tuple[str, dict]]:
    """(label, run) of the finished scratch / SSL fine-tune / focal classifiers."""
    found = [(label, parts.get(part, {}).get(key)) for part, key, label in CLASSIFIERS]
    return [(label, r) for label, r in found if r and "test_accuracy" in r.get("metrics", {})]


def accuracy_target(parts: dict, name: str, threshold: float, imagenet_ok: bool) -> dict:
    """The best test accuracy of a full-split classifier against ``threshold``."""
    runs = [(label, r) for label, r in classifier_runs(parts) if r.get("full_split")]
    if not imagenet_ok:
        runs = [(lb, r) for lb, r in runs if "model.pretrained=imagenet" not in r["overrides"]]
    if not runs:
        return _target(name, "no full-split classifier run", None)
    label, best = max(runs, key=lambda item: item[1]["metrics"]["test_accuracy"])
    accuracy = best["metrics"]["test_accuracy"]
    return _target(name, f"{accuracy:.4f} ({label}, {best['ref']})", accuracy >= threshold)


def edge_target(edge: dict | None) -> dict:
    """An INT8 variant at >= 15 images/s on 2 threads (at its faster batch size), its test
    accuracy at most 1 point below PyTorch FP32's."""
    name = ">= 15 images/s on 2 CPU cores with INT8, test accuracy <= 1 point below FP32"
    if not edge or edge.get("status") != "ok":
        return _target(name, "edge part not run", None)
    if edge["threads"] != 2:
        return _target(name, f"measured on {edge['threads']} threads, not 2", None)
    fp32 = next((v for v in edge["variants"] if v["method"] == "pytorch-fp32"), None)
    int8 = [v for v in edge["variants"] if "int8" in v["method"]]
    if fp32 is None or not int8:
        return _target(name, "no INT8 variant measured", None)
    rows = []
    for v in int8:
        batch, t = max(v["timings"].items(), key=lambda item: item[1]["images_per_s"])
        change = v["test_accuracy"] - fp32["test_accuracy"]
        rows.append((t["images_per_s"] >= 15 and change >= -0.01, t["images_per_s"], v, batch))
    ok, rate, v, batch = max(rows, key=lambda row: (row[0], row[1]))
    measured = (
        f"{v['method']}: {rate:.1f} images/s at batch {batch}; test accuracy "
        f"{v['test_accuracy']:.4f}, FP32 {fp32['test_accuracy']:.4f}"
    )
    return _target(name, measured, ok)


def fewshot_target(fewshot: dict | None) -> dict:
    run = (fewshot or {}).get("runs", {}).get("10")
    if run is None:
        return _target("10-shot accuracy reported", "no 10-shot run", None)
    m = run["metrics"]
    proto = f", prototype head {_f(m.get('proto_test_accuracy'))}"
    return _target("10-shot accuracy reported", f"{m['test_accuracy']:.4f}{proto}", True)


def targets(result: dict) -> list[dict]:
    """The issue's targets, each from the measured numbers (none counts from a quick run)."""
    parts = result["parts"]
    rows = [
        accuracy_target(parts, "test accuracy >= 0.97 on the full split", 0.97, True),
        accuracy_target(parts, "goal: test accuracy 0.99 without ImageNet weights", 0.99, False),
        edge_target(parts.get("edge")),
        fewshot_target(parts.get("fewshot")),
    ]
    if result["settings"]["quick"]:
        for row in rows:
            row["measured"] += " (quick smoke run: does not count)"
            row["status"] = "not measured"
    return rows


RUN_COLUMNS = ["run", "version", "test accuracy", "test macro-F1", "val accuracy",
               "heat in box", "epochs", "steps", "wall s"]  # fmt: skip


def run_cells(label: str, r: dict) -> list[str]:
    m = r["metrics"]
    scores = [_f(m.get(k)) for k in ("test_accuracy", "test_macro_f1", "val_accuracy")]
    counts = [_f(r.get(k), 0) for k in ("epochs_run", "steps", "wall_s")]
    return [label, r["ref"], *scores, _f(m.get("test_heat_in_box"), 3), *counts]


def ssl_lines(p: dict) -> list[str]:
    lines, simclr, tuned = [], p.get("simclr"), p.get("finetune")
    if simclr:
        m = simclr["metrics"]
        how = "reused" if simclr.get("reused") else f"{simclr['steps']} steps"
        lines += [
            f"SimCLR {simclr['ref']} ({how}, {_f(simclr.get('wall_s'), 0)} s): test 1-NN "
            f"accuracy {_f(m.get('test_knn_accuracy'))}, nearest-class-mean accuracy "
            f"{_f(m.get('test_proto_accuracy'))}.",
            "",
        ]
    if tuned:
        m = tuned["metrics"]
        proto = [
            _f(m.get(f"proto_{k}")) for k in ("test_accuracy", "test_macro_f1", "val_accuracy")
        ]
        head = ["prototype head (SimCLR backbone)", simclr["ref"] if simclr else "-", *proto]
        rows = [run_cells("fine-tuned, cross-entropy", tuned), [*head, "-", "-", "-", "-"]]
        lines += md_table(RUN_COLUMNS, rows)
    return lines


def fewshot_lines(p: dict) -> list[str]:
    keys = ("test_accuracy", "test_macro_f1", "proto_test_accuracy", "proto_test_macro_f1")
    rows = [[k, _f(r["metrics"].get("train_images"), 0), *(_f(r["metrics"].get(x)) for x in keys),
             r["ref"], _f(r["wall_s"], 0)] for k, r in p.get("runs", {}).items()]  # fmt: skip
    headers = ["k", "train images", "fine-tuned accuracy", "fine-tuned macro-F1",
               "prototype head accuracy", "prototype head macro-F1", "version",
               "wall s"]  # fmt: skip
    return [
        f"Start: {p.get('start')}. Test accuracy vs k (k labelled training images per class; "
        "validation and test whole):",
        "",
        *md_table(headers, rows),
        "",
        "Published few-shot NEU results: no published figure is quoted here.",
    ]


def imbalance_lines(p: dict) -> list[str]:
    runs = p.get("runs", {})
    if not runs:
        return []
    ms = [r["metrics"] for r in runs.values()]
    classes = [k.removeprefix("test_recall_") for k in ms[0] if k.startswith("test_recall_")]
    rows = [[f"recall {c}", *(_f(m.get(f"test_recall_{c}")) for m in ms)] for c in classes]
    rows += [
        ["macro-F1", *(_f(m.get("test_macro_f1")) for m in ms)],
        ["accuracy", *(_f(m.get("test_accuracy")) for m in ms)],
        ["training images", *(_f(m.get("train_images"), 0) for m in ms)],
        ["version", *(r["ref"] for r in runs.values())],
    ]
    return [
        f"{p['minority']} cut to {p['ratio']} of the other classes' mean in training (validation "
        f"and test whole); start: {p.get('start')}.",
        "",
        *md_table(["test", *runs], rows),
    ]


def edge_lines(p: dict) -> list[str]:
    if "variants" not in p:
        return []
    sizes = p["batch_sizes"]
    timed = [f"{what} @{b}" for b in sizes for what in ("img/s", "p50 ms", "p99 ms")]
    headers = ["variant", "version", "size MB", "test accuracy", "macro-F1", "top-1 agreement",
               "max abs Δp", *timed]  # fmt: skip
    rows = []
    for v in p["variants"]:
        rows.append([v["method"], v["ref"], _f(v["size_bytes"] / 1e6, 1), _f(v["test_accuracy"]),
                     _f(v["test_macro_f1"]), _f(v["top1_agreement"]),
                     _f(v["max_abs_prob_diff"], 5)])  # fmt: skip
        for b in sizes:
            t = v["timings"][str(b)]
            rows[-1] += [
                _f(t["images_per_s"], 1),
                _f(t["p50_ms"], 1),
                _f(t["p99_ms"], 1),
            ]
    return [
        f"Model {p['model']} ({p['chosen']}). {p['threads']} threads (`torch.set_num_threads`, "
        "ONNX Runtime intra-op threads); latency per image = call time / batch over the real "
        "test images, p50/p99 over the timed calls; size = the version's own files (an ONNX file "
        f"holds its weights). 1-minute load average {p.get('load_avg')} at the start: other "
        "processes on the CPU slow PyTorch's threads most.",
        "",
        *md_table(headers, rows),
        *optimize_lines(p.get("optimize")),
    ]


def optimize_lines(opt: dict | None) -> list[str]:
    if not opt:
        return []
    headers = ["method", "optimize status", "default guard", "p50 ms @1", "Δ metric",
               "registered", "note"]  # fmt: skip
    rows = [[c["method"], c["status"], c["default_guard"], _f(c["p50_ms@1"], 1),
             _f(c["metric_delta"]), c["registered"] or "-", (c["note"] or c["reason"])[:240]]
            for c in opt["candidates"]]  # fmt: skip
    return [
        "",
        f"optimize_version's own measurements (ONNX Runtime at its default thread count; eager "
        f"p50 @1 {_f(opt['eager_p50_ms@1'], 1)} ms; metric {opt['metric']}). 'default guard': "
        "what it decides at its defaults (5% faster at batch 1, metric at most 0.01 lower):",
        "",
        *md_table(headers, rows),
    ]


TITLES = {"scratch": "Scratch: no weights, cross-entropy", "ssl": "SSL: SimCLR, then fine-tuning",
          "focal": "Focal loss", "fewshot": "Few-shot: accuracy vs k",
          "imbalance": "Class imbalance: cross-entropy vs focal",
          "edge": "Edge: the best classifier on the CPU"}  # fmt: skip
SECTIONS = {"ssl": ssl_lines, "fewshot": fewshot_lines, "imbalance": imbalance_lines,
            "edge": edge_lines}  # fmt: skip


def part_lines(name: str, p: dict) -> list[str]:
    lines = ["", f"## {TITLES[name]}", ""]
    if "environment" in p:  # merged from an earlier result
        lines += [env_line(p["environment"], p["command"], PACKAGES), ""]
    if p["status"] != "ok":
        lines += [f"Status: {p['status']}. {p.get('error') or p.get('reason') or ''}".strip(), ""]
    if name in ("scratch", "focal") and "run" in p:
        start = f"Start: {p.get('start', 'no weights')}."
        lines += [start, "", *md_table(RUN_COLUMNS, [run_cells(name, p["run"])])]
    elif name in SECTIONS:
        lines += SECTIONS[name](p)
    return lines


def markdown(result: dict) -> str:
    s = result["settings"]
    data = next((r["data"] for _, r in classifier_runs(result["parts"]) if r.get("data")), None)
    quick = "; QUICK smoke run on a subset, nothing here counts" if s["quick"] else ""
    lines = [
        "# NEU-DET defect classification",
        "",
        env_line(result["environment"], result["command"], PACKAGES),
        "",
        f"Settings: backbone {s['backbone']}, image size {s['image_size']}, batch {s['batch']}, "
        f"training device {s['device']}, epochs {s['epochs'] or 'config'}, max steps "
        f"{s['max_steps'] or 'config'}, SimCLR steps {s['ssl_steps'] or 'config'}{quick}. "
        f"Data: {data or s['data']}.",
    ]
    for name in PARTS:
        if name in result["parts"]:
            lines += part_lines(name, result["parts"][name])
    lines += ["", "## Targets", ""]
    rows = [[t["target"], t["measured"], t["status"]] for t in result["targets"]]
    return "\n".join([*lines, *md_table(["target", "measured", "status"], rows), ""])


# ---------------------------------------------------------------- entry point

RUNNERS = {
    "scratch": part_scratch,
    "ssl": part_ssl,
    "focal": part_focal,
    "fewshot": part_fewshot,
    "imbalance": part_imbalance,
    "edge": part_edge,
}


def run_parts(bench: Bench, parts: list[str]) -> bool:
    """Run ``parts`` in order within ``--budget-s``; whether all that ran succeeded."""
    ok = True
    for name in parts:
        elapsed = time.perf_counter() - bench.started
        if bench.args.budget_s is not None and elapsed > bench.args.budget_s:
            reason = f"time budget spent ({elapsed:.0f} s > {bench.args.budget_s:.0f} s)"
            bench.result["parts"][name] = {"status": "skipped", "reason": reason}
            log(f"{name}: skipped, {reason}")
            bench.save()
            continue
        rec = bench.result["parts"][name] = {"status": "running", "load_avg": _load()}
        log(f"{name}: starting")
        start = time.perf_counter()
        try:
            RUNNERS[name](bench, rec)
            rec["status"] = "ok"
        except Exception as exc:  # the other parts still run; the error is in the results
            traceback.print_exc()
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            ok = False
        rec.update(wall_s=round(time.perf_counter() - start, 1), load_avg_end=_load())
        log(f"{name}: {rec['status']} in {rec['wall_s']:.0f} s")
        bench.save()
    return ok


def _load() -> float:
    """The 1-minute load average: other processes on the CPU distort its timings."""
    return round(os.getloadavg()[0], 2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "neu_det")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ", ".join(PARTS))
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="training")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64, help="training batch (classifiers)")
    p.add_argument("--epochs", type=int, default=None, help="classifiers (default: the config's)")
    p.add_argument("--max-steps", type=int, default=None, help="classifiers (the config's)")
    p.add_argument("--ssl-epochs", type=int, default=None, help="SimCLR (the config's)")
    p.add_argument("--ssl-steps", type=int, default=None, help="SimCLR (the config's: 3000)")
    p.add_argument("--ssl-batch", type=int, default=None, help="SimCLR (the config's: 128)")
    p.add_argument("--ssl-model", default=None, help="reuse this SimCLR version (in --home)")
    p.add_argument("--no-ssl-start", action="store_true", help="focal etc. from no weights")
    p.add_argument("--shots", default="1,5,10,20", help="few-shot k values")
    p.add_argument("--minority", default="crazing")
    p.add_argument("--edge-model", default=None, help="REF in --home, or a --edge-export DIR")
    p.add_argument("--edge-export", type=Path, default=None, help="write the chosen model here")
    p.add_argument("--edge-batch", type=int, default=16)
    p.add_argument("--edge-reps", type=int, default=50, help="timed calls per measurement")
    p.add_argument("--edge-warmup", type=int, default=5)
    p.add_argument("--edge-measure-s", type=float, default=60.0, help="time per measurement")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the edge part")
    p.add_argument("--home", type=Path, default=None, help="abyssal home (default: temporary)")
    p.add_argument("--merge", type=Path, default=None, help="keep the parts of this result")
    p.add_argument("--budget-s", type=float, default=None, help="skip parts starting later")
    p.add_argument("--commit", default=None, help="the commit measured (the copy may lack git)")
    p.add_argument("--out", type=Path, default=None, help="results file stem")
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run (~3 min, 2 cores)")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = [x for x in args.parts if x not in PARTS]
    if unknown:
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    args.parts = [x for x in PARTS if x in args.parts]  # dependencies first
    args.shots = [int(k) for k in args.shots.split(",")]
    if args.quick:
        args.device = "cpu"
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.data = args.data.resolve()
    return args


def new_result(args: argparse.Namespace, cuda: bool, home: Path) -> dict:
    """The result skeleton: command, environment, settings, and the parts of ``--merge``."""
    env = environment(("torch", "torchvision", "onnxruntime", "numpy"))
    env["git_commit"] = args.commit or env["git_commit"]
    keys = ("backbone", "image_size", "batch", "epochs", "max_steps", "ssl_steps", "ssl_epochs",
            "ssl_model", "no_ssl_start", "shots", "minority", "threads", "edge_batch",
            "edge_reps", "edge_measure_s", "quick")  # fmt: skip
    settings = {k: getattr(args, k) for k in keys}
    settings.update(device="cuda" if cuda else "cpu", data=str(args.data), home=str(home))
    result = {"command": "python " + " ".join(sys.argv), "environment": env,
              "settings": settings, "parts": {}}  # fmt: skip
    if args.merge:
        earlier = json.loads(args.merge.read_text())
        for name, part in earlier["parts"].items():
            part.setdefault("environment", earlier["environment"])
            part.setdefault("command", earlier["command"])
            result["parts"][name] = part
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    tmp = tempfile.TemporaryDirectory(prefix="abyssal-defect-")
    home = (args.home or Path(tmp.name) / "home").resolve()
    # solution.pretrained_state loads model.pretrained=REF from the default store, not from
    # train(home=...): point the default store at this home
    os.environ["ABYSSAL_HOME"] = str(home)
    default_out = (
        Path(tmp.name) / "defect_quick"
        if args.quick
        else RESULTS / f"defect_{'cuda' if cuda else 'cpu'}"
    )
    bench = Bench(args, home, args.out or default_out, new_result(args, cuda, home))
    bench.ssl_ref = args.ssl_model
    log(f"defect benchmark: parts {', '.join(args.parts)}; home {home}; results {bench.out}")
    ok = run_parts(bench, args.parts)
    if args.edge_export:
        ok = export_chosen(bench, args.edge_export) and ok
    bench.result["wall_s"] = round(time.perf_counter() - bench.started, 1)
    bench.result["targets"] = targets(bench.result)
    write_result(bench.result, bench.out, markdown)
    log(f"done in {bench.result['wall_s']:.0f} s: {bench.out.with_suffix('.md')}")
    tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
