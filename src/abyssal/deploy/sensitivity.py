"""Which requests are sensitive: the router keeps them on trusted tiers (edge, private).

A request is sensitive when any rule of :class:`~abyssal.deploy.spec.SensitivityPolicy` says so:
its model is listed, its sensitivity header says so, it carries a listed field, a field whose name
announces personal data (``email``, ``iban``, ``phone``, ...) has a value, or one of its text
values holds personal data by :func:`abyssal.data.pii.find_pii` (checksummed cards and IBANs,
e-mails, phone numbers, national ids, IPs, names). A body that cannot be read (not JSON) is
sensitive: the router fails closed, and the replica then refuses it with its own message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from abyssal.deploy.spec import SensitivityPolicy

SENSITIVE_VALUES = frozenset({"sensitive", "private", "restricted", "confidential", "pii"})
MAX_SCANNED = 64 << 10  # characters of text values scanned per request; more is sensitive


@dataclass(frozen=True)
class Verdict:
    """A request's sensitivity and the rule that decided it (for logs and headers)."""

    sensitive: bool
    why: str = ""


def classify(
    policy: SensitivityPolicy,
    model: str,
    headers: Mapping[str, str],
    body: bytes,
    content_type: str = "application/json",
) -> Verdict:
    """The sensitivity of one predict request to ``model``.

    Example:
        >>> classify(SensitivityPolicy(), "text", {}, b'{"text": "mail jo@example.com"}')
        Verdict(sensitive=True, why='EMAIL in text')
    """
    if model in policy.models:
        return Verdict(True, f"model {model}")
    stated = headers.get(policy.header.lower(), "").strip().lower()
    if stated in SENSITIVE_VALUES:
        return Verdict(True, f"{policy.header}: {stated}")
    if content_type.startswith("multipart/form-data"):
        return Verdict(policy.uploads, "upload" if policy.uploads else "")
    if not policy.fields and not policy.pii:
        return Verdict(False)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Verdict(True, "unreadable body")
    return _scan(policy, payload)


def _scan(policy: SensitivityPolicy, payload: Any) -> Verdict:
    from abyssal.data.pii import find_pii, kind_from_name

    wanted = set(policy.fields)
    scanned = 0
    for name, value in _fields(payload):
        if value in (None, "") or isinstance(value, bool):
            continue
        if name in wanted:
            return Verdict(True, f"field {name}")
        if not policy.pii:
            continue
        kind = kind_from_name(name) if name else None
        if kind is not None:
            return Verdict(True, f"{kind} field {name}")
        if isinstance(value, str):
            scanned += len(value)
            if scanned > MAX_SCANNED:
                return Verdict(True, f"over {MAX_SCANNED} characters of text to scan")
            found = find_pii(value)
            if found:
                return Verdict(True, f"{found[0].kind} in {name or 'a value'}")
    return Verdict(False)


def _fields(payload: Any, name: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """``(field name, value)`` for every leaf of a JSON payload (lists keep their parent's
    name; ``instances`` is looked through)."""
    if depth > 8:
        yield name, json.dumps(payload)[:MAX_SCANNED]
    elif isinstance(payload, Mapping):
        for key, value in payload.items():
            inner = name if key == "instances" else str(key)
            yield from _fields(value, inner, depth + 1)
    elif isinstance(payload, list):
        for value in payload:
            yield from _fields(value, name, depth + 1)
    else:
        yield name, payload
