"""A predictor that also decides: every response of a binary classifier gains ``decision``
(approve, review or block, the score, the operating point and the reason) from the version's
kept operating point. Everything else (parsing, state, caches) is the wrapped predictor's."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from abyssal.decide.points import OperatingPoint


class DecidingPredictor:
    """Wraps ``inner``; ``score_of`` maps one response to the positive class's probability."""

    def __init__(
        self, inner: Any, point: OperatingPoint, score_of: Callable[[Mapping[str, Any]], float]
    ) -> None:
        self.inner = inner
        self.point = point
        self.score_of = score_of

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _decided(self, responses: Sequence[Any]) -> list[Any]:
        out = []
        for r in responses:
            if isinstance(r, dict):
                r = {**r, "decision": self.point.decide(self.score_of(r)).as_dict()}
            out.append(r)
        return out

    def predict(self, items: Sequence[Any]) -> list[Any]:
        return self._decided(self.inner.predict(items))

    def predict_cached(self, items: Sequence[Any]) -> list[Any]:
        return self._decided(self.inner.predict_cached(items))


def deciding(loaded: Any, predictor: Any, point_name: str | None = None) -> Any:
    """``predictor`` wrapped to decide with ``loaded``'s kept operating point (``point_name``,
    else the default), or ``predictor`` itself when the version has no points or its solution
    decides nothing."""
    from abyssal.decide.store import load_points, points_path

    score_of = loaded.solution.decision_score(loaded)
    if score_of is None or not points_path(loaded.version.ref).is_file():
        return predictor
    record = load_points(loaded.version.ref)
    wanted = point_name or record["default"]
    point = next((p for p in record["points"] if p.name == wanted), None)
    if point is None:
        from abyssal.core.errors import AbyssalError

        raise AbyssalError(
            f"{loaded.version.ref} has no operating point '{wanted}'; it has "
            f"{[p.name for p in record['points']]}"
        )
    return DecidingPredictor(predictor, point, score_of)
