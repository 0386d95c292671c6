"""Continual updates of a deployed model: warm-started fine-tuning on new labelled data with
replay of older data, gated by the pipeline before the alias moves.

``update_production(cfg, new)`` takes the version a pipeline's deploy alias points at
(``production``), builds a training table from the new labelled rows and a replay sample of
the table that version was trained on (against forgetting), and runs the pipeline on it with
``train.init_from`` set to that version: validate, train (warm-started), time, gate, deploy. The
alias moves only when the gate passes; a refused update leaves ``production`` where it was (the
candidate stays in the store, unaliased, with the pipeline's report naming the failed rules).

New labels may come from the feedback store (:mod:`abyssal.decide.feedback`) instead of the new
table's own label column: rows whose labels are still inside their window are left out, never
counted as negatives.

Each update keeps its training table and a record under
``$ABYSSAL_HOME/updates/<pipeline>/<time>/`` (``train.csv``, ``update.json``).

Example:
    >>> out = update_production(load_pipeline("pipelines/fraud.yaml"), "march.csv",
    ...                         replay=0.25, replay_by="user_id")  # doctest: +SKIP
    >>> out.status, out.production_before, out.production_after  # doctest: +SKIP
    ('deployed', 'fraud:3', 'fraud:4')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.atomic import write_text_atomic
from abyssal.core.clock import utc_now
from abyssal.core.errors import AbyssalError, ConfigError, DataError
from abyssal.core.home import abyssal_home, using_home
from abyssal.core.store import ModelStore
from abyssal.data.tables import read_table, write_table
from abyssal.decide.prequential import replay_sample
from abyssal.pipeline.dag import StepResult
from abyssal.pipeline.run import run_pipeline
from abyssal.pipeline.spec import PipelineConfig
from abyssal.pipeline.steps import production


@dataclass
class UpdateOutcome:
    """How an update ended: ``status`` is the pipeline's (``deployed``, ``refused``,
    ``stopped``, ``failed``); the alias before and after; the rows trained on."""

    status: str
    reason: str
    production_before: str
    production_after: str
    candidate: str | None
    new_rows: int
    replay_rows: int
    table: str
    record: str
    pipeline_state: str


def _dotted(config: dict[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _replay(
    old: pd.DataFrame, share: float, by: str | None, rng: np.random.Generator
) -> pd.DataFrame:
    if share == 0 or old.empty:
        return old.iloc[:0]
    if by is not None and by not in old.columns:
        raise DataError(f"replay_by: the production version's table has no column '{by}'")
    groups = None if by is None else old[by].to_numpy()
    return old.iloc[replay_sample(len(old), share, rng, groups)]


def _with_feedback(
    new: pd.DataFrame, model: str, label: str, id_column: str, window_s: float, home: Any
) -> pd.DataFrame:
    """``new`` labelled from the feedback store as of now; rows still pending are dropped."""
    from abyssal.decide.feedback import labelled_rows

    if id_column not in new.columns:
        raise DataError(f"the new table has no id column '{id_column}' to join feedback on")
    known = labelled_rows(model, window_s=window_s, home=home)
    resolved = known.dropna(subset=["label"]).drop_duplicates("id", keep="last")
    labels = dict(zip(resolved["id"].astype(str), resolved["label"].astype(int), strict=True))
    ids = new[id_column].astype(str)
    kept = new[ids.isin(labels)].copy()
    kept[label] = ids[ids.isin(labels)].map(labels).astype(int).to_numpy()
    return kept


def update_production(
    cfg: PipelineConfig,
    new: str | Path,
    *,
    replay: float = 0.25,
    replay_by: str | None = None,
    overrides: Sequence[str] = (),
    labels_from_feedback: bool = False,
    window_s: float = 30 * 86400,
    id_column: str | None = None,
    seed: int = 0,
    home: str | Path | None = None,
    progress: Callable[[int, int, StepResult], None] | None = None,
) -> UpdateOutcome:
    """One continual update of ``cfg``'s deployed version (see the module docstring).

    Args:
        cfg: the pipeline (its ``validate.table`` names the training table's config key, its
            gate and deploy alias decide).
        new: the new labelled rows (CSV or Parquet, the training table's format).
        replay: the share of the production version's training rows (or of its ``replay_by``
            groups, e.g. accounts) trained on beside the new rows.
        overrides: ``key=value`` for the update's training (e.g. ``train.epochs=10``).
        labels_from_feedback: take labels from the feedback store (joined on ``id_column``,
            default the pipeline's first ``validate.keys``) instead of the table's own.
        window_s: the label window for ``labels_from_feedback``.

    Raises:
        AbyssalError: no deployed version to update.
        DataError: the new table lacks the production table's columns, or its labels.
        ConfigError: a share out of range, a pipeline without a table key.
    """
    if not 0 <= replay <= 1:
        raise ConfigError(f"--replay must be a share in [0, 1], got {replay}")
    label = cfg.validate.label or "label"
    with using_home(home):
        store = ModelStore()
        current = production(store, cfg)
    if current is None:
        raise AbyssalError(
            f"{cfg.model} has no '{cfg.deploy.alias}' version to update: run the pipeline "
            "once first (abyssal pipeline run)"
        )
    old_path = _dotted(current.config.get("solution_config", {}), cfg.validate.table)
    if not old_path:
        raise ConfigError(
            f"{current.ref}: its config has no '{cfg.validate.table}' (the pipeline's "
            "validate.table) to replay from"
        )
    fresh = read_table(new)
    if labels_from_feedback:
        key = id_column or (cfg.validate.keys[0] if cfg.validate.keys else None)
        if key is None:
            raise ConfigError(
                "labels from feedback need an id column: --id-column or validate.keys"
            )
        fresh = _with_feedback(fresh, cfg.model, label, key, window_s, home)
        if fresh.empty:
            raise DataError(f"{new}: no row has a confirmed label yet (feedback of {cfg.model})")
    if label not in fresh.columns:
        raise DataError(f"{new}: no '{label}' column: an update trains on labelled rows")
    old = read_table(old_path) if replay > 0 else fresh.iloc[:0]
    missing = [c for c in old.columns if c not in fresh.columns]
    if missing:
        raise DataError(f"{new}: lacks the columns of {current.ref}'s training table: {missing}")
    keys = [k for k in cfg.validate.keys if k in fresh.columns]
    if keys:  # a row the new table has again is the new table's
        old = old[~old.set_index(keys).index.isin(fresh.set_index(keys).index)]
    replayed = _replay(old[list(fresh.columns)] if not old.empty else old, replay, replay_by,
                       np.random.default_rng(seed))  # fmt: skip
    table = pd.concat([replayed, fresh], ignore_index=True)
    stamp = utc_now("seconds")[:19].replace(":", "").replace("-", "")  # 20260301T120000
    folder = abyssal_home(home) / "updates" / cfg.name / stamp
    for n in range(2, 1000):  # two updates within a second keep their own folders
        if not folder.exists():
            break
        folder = folder.with_name(f"{stamp}-{n}")
    folder.mkdir(parents=True)
    path = write_table(table, folder / "train.csv")
    updated = replace(
        cfg,
        overrides=[
            *cfg.overrides,
            f"{cfg.validate.table}={path}",
            f"train.init_from={current.ref}",
            *overrides,
        ],
    )
    run = run_pipeline(updated, home=home, progress=progress)
    with using_home(home):
        after = production(ModelStore(), cfg)
    trained = [o for a in run.attempts for k, o in a.outputs.items() if k.startswith("train-")]
    outcome = UpdateOutcome(
        status=run.status,
        reason=run.reason,
        production_before=current.ref,
        production_after=after.ref if after is not None else current.ref,
        candidate=trained[-1].get("ref") if trained else None,
        new_rows=len(fresh),
        replay_rows=len(replayed),
        table=str(path),
        record=str(folder / "update.json"),
        pipeline_state=str(run.state),
    )
    write_text_atomic(folder / "update.json", json.dumps(asdict(outcome), indent=1) + "\n")
    return outcome
