"""Registered versions made ready to serve: loaded through the solution protocol, each with its
solution's predictor, named by its model name; :class:`AliasFollower` swaps in the version an
alias (or a bare name: the newest version) comes to point at, while the service runs.

A ref with ``@PERCENT`` (``text:8@10``) is a canary: served beside the main version of its
name, answering that share of its requests.

Example:
    >>> served = load_served(["text:production", "defect:3", "text:8@10"])  # doctest: +SKIP
    >>> [(m.name, m.ref, [c.ref for c in m.canaries]) for m in served]  # doctest: +SKIP
    [('text', 'text:7', ['text:8']), ('defect', 'defect:3', [])]
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from abyssal.core.errors import ConfigError
from abyssal.serve.app import ServedModel
from abyssal.serve.journal import Journal

log = logging.getLogger(__name__)

PINNED = re.compile(r"^[^:]+:\d+$")
"""A ref naming one version (``text:3``): never followed."""

CANARY = re.compile(r"^(?P<ref>[^@]+)@(?P<percent>\d+(?:\.\d+)?)%?$")
"""A canary ref: ``text:8@10`` (or ``text:8@10%``) answers 10 % of model ``text``'s requests."""


def load_served(
    refs: Sequence[str],
    *,
    store: Any = None,
    device: str | None = None,
    state_dir: str | Path | None = None,
    snapshot_every: int = 1000,
) -> list[ServedModel]:
    """Load each version (``name``, ``name:alias`` or ``name:N``, with ``@PERCENT`` for a
    canary) and its predictor; a stateful model (fraud) gets the journal
    ``<state_dir>/<name>/journal.jsonl`` (snapshots every ``snapshot_every`` requests beside
    it) when ``state_dir`` is given, and never follows its alias (its state would not carry
    over).

    Raises:
        ConfigError: no version, two main refs resolving to one model name (serve one version
            of a name per service, others as canaries), a canary without a main version of its
            name or a share out of range.
        StoreError: an unknown model or version (from the store).
    """
    if not refs:
        raise ConfigError("abyssal serve needs at least one model version (e.g. text:production)")
    main = [r for r in refs if "@" not in r]
    canaries = [r for r in refs if "@" in r]
    served: list[ServedModel] = []
    for ref in main:
        model = _load_one(ref, store, device, state_dir, snapshot_every)
        if any(m.name == model.name for m in served):
            raise ConfigError(
                f"{ref} and another ref both name model {model.name!r}: serve one version of "
                f"a name per service, and others as canaries ({ref}@10 answers 10 % of calls)"
            )
        served.append(model)
    for ref in canaries:
        match = CANARY.match(ref)
        if match is None:
            raise ConfigError(f"{ref!r}: a canary is REF@PERCENT, e.g. text:8@10")
        share = float(match["percent"]) / 100
        model = _load_one(match["ref"], store, device, None, 0, share=share)
        owner = next((m for m in served if m.name == model.name), None)
        if owner is None:
            raise ConfigError(
                f"the canary {ref} has no main version of {model.name!r} to share with; "
                f"serve one too (e.g. {model.name}:production)"
            )
        owner.canaries.append(model)
    return served


def _load_one(
    ref: str,
    store: Any,
    device: str | None,
    state_dir: str | Path | None,
    snapshot_every: int,
    share: float = 0.0,
) -> ServedModel:
    from abyssal.decide.predictor import deciding
    from abyssal.solutions.loading import load_model

    loaded = load_model(ref, store=store, device=device)
    version = loaded.version
    predictor = deciding(loaded, loaded.solution.predictor(loaded))
    stateful = bool(getattr(predictor, "stateful", False))
    follow = None if PINNED.match(ref) or stateful else ref
    journal = None
    if stateful and state_dir is not None:
        path = Path(state_dir) / version.name / "journal.jsonl"
        journal = Journal(path, snapshot_every=snapshot_every)
    elif stateful and not share:
        log.warning(
            "%s is stateful and no state folder was given: what it ingests is lost on "
            "restart (abyssal serve --state-dir DIR keeps it)",
            version.ref,
        )
    name, solution = version.name, loaded.solution.name
    return ServedModel(name, version.ref, predictor, solution, follow, journal, share)


def load_predictor(ref: str, *, store: Any = None, device: str | None = None) -> tuple[str, Any]:
    """``(version ref, predictor)`` of the version ``ref`` resolves to now."""
    from abyssal.decide.predictor import deciding
    from abyssal.solutions.loading import load_model

    loaded = load_model(ref, store=store, device=device)
    return loaded.version.ref, deciding(loaded, loaded.solution.predictor(loaded))


class AliasFollower:
    """Checks every ``interval_s`` where each followed ref points, and swaps a model whose alias
    moved (loading the new version in a worker thread, off the event loop). A failed check or
    load is logged and the current version stays served.

    Args:
        interval_s: seconds between checks.
        resolve: ref -> the version ref it points at now (default: the model store's).
        load: ref -> ``(version ref, predictor)`` (default: :func:`load_predictor`).
    """

    def __init__(
        self,
        interval_s: float = 5.0,
        *,
        resolve: Callable[[str], str] | None = None,
        load: Callable[[str], tuple[str, Any]] | None = None,
        store: Any = None,
        device: str | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ConfigError(f"the alias check interval must be > 0 s, got {interval_s}")
        self.interval_s = interval_s
        self.resolve = resolve or (lambda ref: _store(store).resolve(ref).ref)
        self.load = load or (lambda ref: load_predictor(ref, store=store, device=device))

    async def check(
        self,
        models: Sequence[ServedModel],
        swap: Callable[[ServedModel, str, Any], Awaitable[None]],
    ) -> list[str]:
        """Swap every followed model whose ref now points elsewhere; the new refs."""
        moved = []
        for model in models:
            if model.follow is None:
                continue
            target = await asyncio.to_thread(self.resolve, model.follow)
            if target == model.ref:
                continue
            ref, predictor = await asyncio.to_thread(self.load, model.follow)
            await swap(model, ref, predictor)
            moved.append(ref)
        return moved

    async def run(
        self,
        models: Sequence[ServedModel],
        swap: Callable[[ServedModel, str, Any], Awaitable[None]],
    ) -> None:
        """Check forever (until cancelled)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check(models, swap)
            except Exception:
                log.exception("following aliases failed; the current versions stay served")


def _store(store: Any) -> Any:
    if store is not None:
        return store
    from abyssal.core.store import ModelStore

    return ModelStore()
