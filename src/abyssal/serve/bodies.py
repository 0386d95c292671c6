"""Request bodies of the HTTP service: JSON (one request or ``{"instances": [...]}``) and
``multipart/form-data`` uploads, read into the solution's requests with their size checked; and
answers written as strict JSON (numpy values made plain, NaN and infinities ``null``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from abyssal.core.optional import require

MAX_INSTANCES = 1024
"""Most requests one body may carry."""


async def json_requests(
    request: Any, files: Sequence[str], max_bytes: int, allow_paths: bool
) -> list[Any] | tuple[int, str]:
    """The requests of a JSON body, or ``(status, message)``: 413 over ``max_bytes``, 422 not
    JSON, not requests, or naming a server-side file (one of ``files``) without
    ``allow_paths``."""
    body = await request.body()
    if len(body) > max_bytes:
        return 413, f"the body is over {max_bytes} bytes"
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return 422, f"the body is not JSON: {e}"
    except ValueError as e:
        return 422, str(e)
    instances = split_instances(payload)
    if isinstance(instances, str):
        return 422, instances
    if not allow_paths:
        for index, item in enumerate(instances):
            named = [f for f in files if isinstance(item, Mapping) and item.get(f)]
            if named:
                return 422, (
                    f"request {index}: send {named[0]!r} as a file upload (multipart/form-data); "
                    "this service does not read files from its own disk"
                )
    return instances


async def form_request(
    request: Any, files: Sequence[str], folder: Path, max_bytes: int
) -> list[Any] | tuple[int, str]:
    """One request from a ``multipart/form-data`` body: each uploaded file (under one of the
    predictor's file fields) saved in ``folder`` and named by its path; other fields as text
    (JSON values where they parse: numbers, lists)."""
    try:
        form = await request.form()
    except Exception as e:  # the multipart parser's errors have no common type
        return 422, f"the form cannot be read: {e}"
    payload: dict[str, Any] = {}
    total = 0
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an upload
            if key not in files:
                return (
                    422,
                    f"unexpected file field {key!r}; this model takes files as {list(files)}",
                )
            data = await value.read()
            total += len(data)
            if total > max_bytes:
                return 413, f"the uploads are over {max_bytes} bytes"
            target = folder / f"{len(payload)}-{safe_name(value.filename or key)}"
            target.write_bytes(data)
            payload[key] = str(target)
        else:
            try:
                payload[key] = json.loads(value, parse_constant=_no_constant)
            except ValueError:  # text, or NaN/Infinity: left as the words, for the model to judge
                payload[key] = value
    if not payload:
        return 422, "the form is empty"
    return [payload]


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (Python's reader takes them)."""
    raise ValueError(f"the body is not JSON: {name} is not a JSON number (send null for a "
                     "missing value)")  # fmt: skip


def safe_name(name: str) -> str:
    """A file name kept to its last part and safe characters (its suffixes kept: readers
    choose the format by them)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(c if c.isalnum() or c in "._-" else "_" for c in base).lstrip(".")
    return kept[-120:] or "upload"


def split_instances(payload: Any) -> list[Any] | str:
    """The requests of a body, or what is wrong with it."""
    if isinstance(payload, Mapping) and "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            return "'instances' must be a non-empty list of requests"
        if len(instances) > MAX_INSTANCES:
            return f"'instances' has {len(instances)} requests, more than {MAX_INSTANCES}"
        return instances
    if isinstance(payload, Mapping):
        return [payload]
    return f"the body must be a JSON object, got {type(payload).__name__}"


def json_response(content: Mapping[str, Any]) -> Any:
    """A JSON response of numpy-aware content; NaN and infinities are written ``null``."""
    responses = require("fastapi.responses", extra="serve", purpose="abyssal serve")
    text = json.dumps(finite(content), allow_nan=False)
    return responses.Response(text.encode(), media_type="application/json")


def finite(value: Any) -> Any:
    """``value`` with numpy values made plain and non-finite floats made ``None``."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
