"""Registered versions made ready to serve: loaded through the solution protocol, each with its
solution's predictor, named by its model name.

Example:
    >>> served = load_served(["text:production", "defect:3"])  # doctest: +SKIP
    >>> [(m.name, m.ref) for m in served]  # doctest: +SKIP
    [('text', 'text:7'), ('defect', 'defect:3')]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from abyssal.core.errors import ConfigError
from abyssal.serve.app import ServedModel


def load_served(
    refs: Sequence[str], *, store: Any = None, device: str | None = None
) -> list[ServedModel]:
    """Load each version (``name``, ``name:alias`` or ``name:N``) and its predictor.

    Raises:
        ConfigError: no version, or two refs resolving to one model name (serve one version
            of a name per service).
        StoreError: an unknown model or version (from the store).
    """
    from abyssal.solutions.loading import load_model

    if not refs:
        raise ConfigError("abyssal serve needs at least one model version (e.g. text:production)")
    served: list[ServedModel] = []
    for ref in refs:
        loaded = load_model(ref, store=store, device=device)
        version = loaded.version
        if any(m.name == version.name for m in served):
            raise ConfigError(
                f"{ref} and another ref both name model {version.name!r}: serve one version of "
                "a name per service"
            )
        predictor = loaded.solution.predictor(loaded)
        served.append(ServedModel(version.name, version.ref, predictor, loaded.solution.name))
    return served
