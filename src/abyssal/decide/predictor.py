"""A predictor that also decides: every response of a binary classifier gains ``decision``
(approve, review or block, the score, the operating point and the reason) from the version's
kept operating point; a multi-class classifier's, accept or review from the predicted class's
probability. Everything else (parsing, state, caches) is the wrapped predictor's.

Each decided response whose item has an id is written to the model name's prediction log
(:func:`abyssal.decide.feedback.log_predictions`), so confirmed labels can come back for it
later: the id is the response's ``transaction_id`` or ``id``, else the request's; the event
time the response's ``timestamp``, else the request's, else now. One append per ``predict``
call; a log that cannot be written is a warning, never a failed answer. A multi-class point's
decisions (accept or review) are logged with the predicted class's probability as the score.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from abyssal.decide import feedback
from abyssal.decide.points import Decision, OperatingPoint

log = logging.getLogger(__name__)

ID_KEYS = ("transaction_id", "id")
"""Where an item's id is looked for, in a response and then in its request."""


@dataclass(frozen=True, slots=True)
class Tagged:
    """A parsed item with the id and timestamp its request carried (for the prediction log);
    :meth:`DecidingPredictor.predict` hands the wrapped predictor ``item`` alone."""

    item: Any
    id: Any = None
    timestamp: Any = None


class DecidingPredictor:
    """Wraps ``inner``; ``score_of`` maps one response to the positive class's probability
    (for a multi-class point: the predicted class's).

    Args:
        inner: the solution's predictor.
        point: the operating point that decides.
        score_of: one response -> its score.
        ref: the version (``fraud:3``) whose decisions are logged under its name; ``None``:
            nothing is logged.
        log_predictions: ``False`` turns the prediction log off.
        home: where the log is (default: ``$ABYSSAL_HOME``); also where the service's feedback
            endpoint stores the labels of this model.
    """

    def __init__(
        self,
        inner: Any,
        point: OperatingPoint,
        score_of: Callable[[Mapping[str, Any]], float],
        *,
        ref: str | None = None,
        log_predictions: bool = True,
        home: str | os.PathLike[str] | None = None,
    ) -> None:
        self.inner = inner
        self.point = point
        self.score_of = score_of
        self.ref = ref
        self.log_predictions = bool(log_predictions and ref)
        self.feedback_home = home

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def parse(self, payload: Any) -> Any:
        """The wrapped predictor's parse, tagged with the request's id and timestamp when
        decisions are logged."""
        item = self.inner.parse(payload)
        if not self.log_predictions or not isinstance(payload, Mapping):
            return item
        return Tagged(item, _first(payload, ID_KEYS), payload.get("timestamp"))

    def _decided(self, items: Sequence[Any], responses: Sequence[Any]) -> list[Any]:
        out, rows = [], []
        for k, r in enumerate(responses):
            if isinstance(r, dict):
                decision = self.point.decide(self.score_of(r))
                r = {**r, "decision": decision.as_dict()}
                if self.log_predictions and k < len(items):
                    rows.append(self._row(items[k], r, decision))
            out.append(r)
        self._log([row for row in rows if row is not None])
        return out

    def _row(self, item: Any, response: Mapping[str, Any], decision: Decision) -> Any:
        """The prediction-log row of one decided item, ``None`` without an id."""
        tag = item if isinstance(item, Tagged) else Tagged(item)
        inner = tag.item if isinstance(tag.item, Mapping) else {}
        ident = _first(response, ID_KEYS)
        ident = ident if ident is not None else _first(inner, ID_KEYS)
        ident = ident if ident is not None else tag.id
        if ident is None or isinstance(ident, bool):
            return None
        times = (response.get("timestamp"), inner.get("timestamp"), tag.timestamp)
        return {"id": str(ident), "version": self.ref, "score": decision.score,
                "action": decision.action, "event_time": _event_time(times)}  # fmt: skip

    def _log(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        name = str(self.ref).partition(":")[0]
        try:
            feedback.log_predictions(name, rows, home=self.feedback_home)
        except Exception:  # the answer matters more than its log line
            log.warning("%s: %d decisions could not be logged for feedback", self.ref,
                        len(rows), exc_info=True)  # fmt: skip

    def predict(self, items: Sequence[Any]) -> list[Any]:
        return self._decided(items, self.inner.predict(_untagged(items)))

    def predict_cached(self, items: Sequence[Any]) -> list[Any]:
        return self._decided(items, self.inner.predict_cached(_untagged(items)))


def _untagged(items: Sequence[Any]) -> list[Any]:
    return [i.item if isinstance(i, Tagged) else i for i in items]


def _first(mapping: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The first of ``keys`` with a value (not ``None``, not empty text)."""
    for key in keys:
        value = mapping.get(key)
        if value is not None and value != "":
            return value
    return None


def _event_time(candidates: Sequence[Any]) -> int:
    """The first readable timestamp of ``candidates`` (Unix seconds), else now."""
    for value in candidates:
        if value is None:
            continue
        try:
            return math.floor(feedback.to_unix_seconds(value))
        except ValueError:
            continue
    return int(time.time())


def deciding(
    loaded: Any,
    predictor: Any,
    point_name: str | None = None,
    *,
    log_predictions: bool = True,
    home: str | os.PathLike[str] | None = None,
) -> Any:
    """``predictor`` wrapped to decide with ``loaded``'s kept operating point (``point_name``,
    else the default), or ``predictor`` itself when the version has no points or its solution
    decides nothing. Decisions of items with an id are logged for feedback unless
    ``log_predictions`` is ``False`` (``home``: where; default ``$ABYSSAL_HOME``)."""
    from abyssal.decide.store import point as kept
    from abyssal.decide.store import points_path

    score_of = loaded.solution.decision_score(loaded)
    if score_of is None or not points_path(loaded.version.ref).is_file():
        return predictor
    point = kept(loaded.version.ref, point_name)
    return DecidingPredictor(predictor, point, score_of, ref=loaded.version.ref,
                             log_predictions=log_predictions, home=home)  # fmt: skip
