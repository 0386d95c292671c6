"""Rebuild a registered model version: its solution, resolved config, spec and weights.

A version may build on a ``base`` (another stored version, or an external model such as a Hugging
Face folder), so loading composes: the model is built from the top version's config, then the
tensor artifacts (roles ``weights``, ``adapter``, ``quantized``) of every version in the chain are
loaded into it, from the root of the chain to the top, so a later layer (an adapter) lands on top of
an earlier one (the base weights). Every parameter and buffer of the model must come from some
artifact (unless an external base, which the builder loads itself, supplies the rest) and no
artifact may hold a key the model lacks. Loading never unpickles.

A version registered by ``abyssal optimize`` holds no weights of its own: its base is the parent,
and its config's ``optimization`` entry names the variant (compiled, ONNX Runtime, INT8, CUDA
graphs, placed) and its recipe. Loading builds the parent's model, then
:func:`abyssal.nn.variants.load_variant` turns it into the optimized one from the version's own
files, so ``predict`` and ``evaluate`` run it unchanged.

Example:
    >>> loaded = load_model("text-lora:production")  # doctest: +SKIP
    >>> loaded.model.training
    False
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from abyssal.contracts.solution import Solution
from abyssal.core.artifacts import TENSOR_ROLES, ArtifactRecord, ExternalBase
from abyssal.core.config import apply_overrides, config_from_dict, path_values
from abyssal.core.digest import fingerprint_path
from abyssal.core.errors import ConfigError, DataError, StoreError
from abyssal.core.store import ModelStore, ModelVersion
from abyssal.solutions import get_solution

KEYS_SHOWN = 10
"""How many offending keys an error lists."""


@dataclass
class LoadedModel:
    """A model version ready to use: ``model`` is in eval mode on ``device``."""

    version: ModelVersion
    solution: Solution
    cfg: Any
    spec: dict[str, Any]
    model: torch.nn.Module


def version_config(solution: Solution, cfg: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """What a model version stores as its config: the resolved solution config and model spec."""
    from abyssal.core.config import config_to_dict

    return {"solution_config": config_to_dict(cfg), "model_spec": spec}


def load_model(
    ref: str,
    store: ModelStore | None = None,
    overrides: list[str] | None = None,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Load the version ``ref`` (``"fraud:production"``, ``"fraud:3"``, ``"fraud"``) and its bases.

    Args:
        ref: the model reference.
        store: the model store; the default store when ``None``.
        overrides: ``key=value`` changes to the stored config (e.g. ``data.path=other.csv``).
        device: where to put the model (default: the CPU, or the device an optimized
            version was made for).

    Returns:
        The loaded model with its solution and config. Loading never unpickles.

    Raises:
        StoreError: the version was not registered by a solution; an artifact file in the chain
            is missing or corrupted; an external base changed since registration; the artifacts
            leave model keys unset or hold keys the model lacks (up to 10 are listed).

    Example:
        >>> loaded = load_model("fraud:production")  # doctest: +SKIP
        >>> loaded.version.ref
        'fraud:3'
    """
    store = store or ModelStore()
    chain = store.chain(ref)
    mv = chain[0]
    solution = get_solution(mv.solution)
    stored = mv.config
    if not {"solution_config", "model_spec"} <= set(stored):
        raise StoreError(f"{mv.ref} was not registered by a solution (no solution_config)")
    data = apply_overrides(solution.config_cls, stored["solution_config"], overrides or [])
    cfg = config_from_dict(solution.config_cls, data, where=f"{mv.ref} config")
    for link in chain:
        if isinstance(link, ExternalBase):
            check_external_base(link, mv.ref)
    spec = stored["model_spec"]
    model = solution.build_model(cfg, spec)
    optimization = stored.get("optimization")
    if optimization is None:
        apply_chain(model, store, chain)
        return LoadedModel(mv, solution, cfg, spec, model.to(device or "cpu").eval())
    apply_chain(model, store, chain[1:])  # the parent's weights; the top holds the variant's
    target = torch.device(device or optimization.get("target", "cpu"))
    model = _optimized(model.to(target).eval(), store, mv, solution, cfg, spec, target)
    return LoadedModel(mv, solution, cfg, spec, model.eval())


def version_state(
    ref: str, solution: str, key: str = "model.pretrained"
) -> dict[str, torch.Tensor]:
    """The state dict (on the CPU) of the version ``ref``, which must be a ``solution`` model:
    the starting weights a config's ``key`` names (another solution's model is a ConfigError
    naming ``key``)."""
    loaded = load_model(ref)
    if loaded.solution.name != solution:
        raise ConfigError(f"{key}={ref} is a '{loaded.solution.name}' model, not '{solution}'")
    return {k: v.cpu() for k, v in loaded.model.state_dict().items()}


def _optimized(
    model: torch.nn.Module,
    store: ModelStore,
    mv: ModelVersion,
    solution: Solution,
    cfg: Any,
    spec: dict[str, Any],
    device: torch.device,
) -> torch.nn.Module:
    """The optimized variant of ``model`` that ``mv`` records (see ``abyssal.optimize``)."""
    from abyssal.nn.variants import LoadContext, load_variant

    optimization = mv.config["optimization"]
    files = {record.name: store.artifact_path(mv, record.name) for record in mv.artifacts}

    def example() -> tuple[Any, ...]:
        inputs = solution.example_inputs(cfg, spec)
        return tuple(v.to(device) if isinstance(v, torch.Tensor) else v for v in inputs)

    ctx = LoadContext(
        device=device, example_inputs=example, input_axes=solution.input_axes(cfg, spec)
    )
    return load_variant(model, optimization["variant"], optimization["recipe"], files, ctx)


def check_data_paths(
    loaded: LoadedModel, overrides: list[str] | None = None, section: str = "data"
) -> None:
    """Refuse, with both what to do and the stored path, data that has moved since training.

    Paths are stored absolute (``train`` resolves them), so they hold from any working directory;
    a file moved or deleted since is reported here rather than deep inside a reader.

    Args:
        loaded: the loaded version.
        overrides: the ``key=value`` changes given with it; an overridden path is not checked
            here (the reader checks it).
        section: the config section whose path fields must exist (the data to evaluate on).

    Raises:
        DataError: a stored path of ``section`` no longer exists, e.g. "data.path: /abs/x was not
            found (the version was trained on it; pass data.path=NEW to evaluate on another
            copy)", with the path as it was typed and the folder it was typed in when known.

    Example:
        >>> check_data_paths(load_model("fraud:candidate"))  # doctest: +SKIP
    """
    given = {item.split("=", 1)[0].strip() for item in overrides or []}
    typed = loaded.version.lineage.get("paths_as_typed") or {}
    for key, value in path_values(loaded.cfg).items():
        if key.startswith(f"{section}.") and key not in given and not Path(value).exists():
            as_typed = f" (typed as {typed[key]})" if key in typed else ""
            raise DataError(
                f"{key}: {value}{as_typed} was not found (the version was trained on it; pass "
                f"{key}=NEW to evaluate on another copy)"
            )


def apply_chain(
    model: torch.nn.Module, store: ModelStore, chain: list[ModelVersion | ExternalBase]
) -> set[str]:
    """Load the tensor artifacts of ``chain`` (from :meth:`ModelStore.chain`) into ``model``.

    Artifacts are applied from the root of the chain to the top, each with
    ``load_state_dict(strict=False)``; onnx, tokenizer, engine and aux artifacts are skipped.

    Args:
        model: a freshly built model.
        store: the store holding the chain.
        chain: the top version first, then its base, its base's base, ...

    Returns:
        The state-dict keys the artifacts provided.

    Raises:
        StoreError: an artifact holds keys the model lacks, does not fit it, or the chain leaves
            model keys unset without an external base to supply them.

    Example:
        >>> apply_chain(model, store, store.chain("text-lora:1"))  # doctest: +SKIP
        {'encoder.weight', 'lora_a', 'lora_b'}
    """
    expected = set(model.state_dict())
    provided: set[str] = set()
    versions = [link for link in chain if isinstance(link, ModelVersion)]
    for mv in reversed(versions):
        for record in mv.artifacts:
            if record.role in TENSOR_ROLES:
                provided |= _apply_artifact(model, store, mv, record, expected)
    missing = expected - provided
    if missing and not isinstance(chain[-1], ExternalBase):
        links = " -> ".join(mv.ref for mv in versions)
        raise StoreError(
            f"{versions[0].ref}: the artifacts of {links} leave {len(missing)} model key(s) "
            f"unset: {_some(missing)}"
        )
    return provided


def check_external_base(base: ExternalBase, owner: str) -> None:
    """Refuse an external base whose files changed since registration.

    A ``uri`` that is not a local path (a hub id, a path on another machine) is not checked.

    Raises:
        StoreError: the fingerprint differs; the message names both.

    Example:
        >>> check_external_base(ExternalBase.from_path("models/bert"), "text:1")  # doctest: +SKIP
    """
    path = Path(base.uri).expanduser()
    if not path.exists():
        return
    now = fingerprint_path(path)
    if now != base.fingerprint:
        raise StoreError(
            f"{owner}: external base '{base.uri}' changed since registration: fingerprint "
            f"{now}, registered {base.fingerprint}"
        )


def _apply_artifact(
    model: torch.nn.Module,
    store: ModelStore,
    mv: ModelVersion,
    record: ArtifactRecord,
    expected: set[str],
) -> set[str]:
    state = store.load_tensors(mv, record.name)
    unknown = set(state) - expected
    if unknown:
        raise StoreError(
            f"{mv.ref}: artifact '{record.name}' holds {len(unknown)} key(s) the model does "
            f"not have: {_some(unknown)}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise StoreError(
            f"{mv.ref}: artifact '{record.name}' does not fit the model: {exc}"
        ) from exc
    return set(state)


def _some(keys: Iterable[str]) -> str:
    """Up to :data:`KEYS_SHOWN` keys, sorted, with a count of the rest."""
    ordered = sorted(keys)
    shown = ", ".join(ordered[:KEYS_SHOWN])
    rest = len(ordered) - KEYS_SHOWN
    return f"{shown} (and {rest} more)" if rest > 0 else shown
