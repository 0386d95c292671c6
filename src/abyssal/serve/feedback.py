"""The service's feedback endpoint, ``POST /v1/models/{name}/feedback``: confirmed labels of the
model's logged decisions, ``{"labels": [{"id", "label", "timestamp"}, ...], "source": "..."}``,
stored all or none by :func:`abyssal.decide.feedback.add_feedback`.

Answers: 200 ``{"stored": n}``; 404 a name the model store does not know; 413 a body over the
limit; 422 a body that is not such an object, or refused records (the message names each one
by its index in ``labels`` and its id; nothing is stored).

Example:
    >>> client.post("/v1/models/fraud/feedback", json={"labels": [
    ...     {"id": "T9", "label": 1, "timestamp": "2026-03-01T12:00:00Z"}],
    ...     "source": "chargebacks"}).json()  # doctest: +SKIP
    {'stored': 1}
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

from abyssal.core.errors import AbyssalError, StoreError
from abyssal.decide.feedback import add_feedback

DEFAULT_SOURCE = "service"
"""The ``source`` of labels whose body names none."""


async def store_feedback(
    name: str, request: Any, max_bytes: int, home: str | os.PathLike[str] | None = None
) -> tuple[int, Any]:
    """``(200, {"stored": n})`` or ``(status, message)`` for one feedback request to the
    model ``name`` (labels kept in ``home``, default ``$ABYSSAL_HOME``)."""
    body = await request.body()
    if len(body) > max_bytes:
        return 413, f"the body is over {max_bytes} bytes"
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return 422, f"the body is not JSON: {e}"
    if not isinstance(payload, Mapping) or not isinstance(payload.get("labels"), list):
        return 422, 'the body must be {"labels": [{"id", "label", "timestamp"}, ...], "source"}'
    source = payload.get("source", DEFAULT_SOURCE)
    if not isinstance(source, str) or not source.strip():
        return 422, f"'source' must be non-empty text, got {source!r}"
    try:
        stored = await asyncio.to_thread(
            add_feedback, name, payload["labels"], source=source.strip(), home=home
        )
    except StoreError as e:
        return 404, str(e)
    except AbyssalError as e:
        return 422, str(e)
    return 200, {"stored": stored}
