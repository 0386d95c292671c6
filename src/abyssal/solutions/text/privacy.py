"""Personal data (PII) in the text solution's texts: masked, kept or refused as ``data.pii`` says.

The policy applies right after a file is read and before anything else sees its texts, so the
tokenizer, the run folder, the logs, the model store and every predictions file see the same
texts:

- ``mask`` (the default): each piece of personal data :func:`abyssal.data.pii.find_pii` finds
  is replaced by ``<KIND>`` (``<EMAIL>``, ``<PHONE>``, ``<NAME>`` ...), in training texts, in the
  texts of files to predict (the predictions file holds the masked text) and in served requests.
  The model is trained and used on masked text.
- ``refuse``: a training file holding personal data is refused with a :class:`DataError` naming
  its lines and the kinds found (never the values). Texts to predict and requests are masked as
  under ``mask``, so a model trained without personal data never sees any.
- ``keep``: texts are used as they are.

Example:
    >>> guard_texts(["mail jane@example.org"], "mask")
    ['mail <EMAIL>']
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.pii import PiiFinding, find_pii, mask_findings
from abyssal.solutions.text.records import MAX_LISTED, TextRecords

POLICIES = ("mask", "keep", "refuse")
"""The values of ``data.pii``."""

log = logging.getLogger(__name__)


def guard_records(records: TextRecords, policy: str) -> TextRecords:
    """The records of a training file under ``policy``: masked, checked, or as they are.

    Raises:
        ConfigError: an unknown policy.
        DataError: ``refuse`` and texts holding personal data (lines and kinds named).
    """
    _check(policy)
    if policy == "keep":
        return records
    findings = [find_pii(text) for text in records.texts]
    held = [i for i, found in enumerate(findings) if found]
    if policy == "refuse" and held:
        raise DataError(_refusal(records, findings, held), path=records.source)
    if held:
        kinds = Counter(f.kind for i in held for f in findings[i])
        counted = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        log.info("data.pii=mask: personal data masked in %d of %d texts (%s)",
                 len(held), len(records.texts), counted)  # fmt: skip
    texts = [mask_findings(t, f) for t, f in zip(records.texts, findings, strict=True)]
    return replace(records, texts=texts)


def guard_texts(texts: Sequence[str], policy: str) -> list[str]:
    """Texts to predict under ``policy``: masked unless it is ``keep``."""
    _check(policy)
    if policy == "keep":
        return list(texts)
    return [mask_findings(text, find_pii(text)) for text in texts]


def _check(policy: str) -> None:
    if policy not in POLICIES:
        raise ConfigError(f"data.pii must be one of {', '.join(POLICIES)}; got {policy!r}")


def _refusal(records: TextRecords, findings: list[list[PiiFinding]], held: list[int]) -> str:
    shown = "; ".join(
        f"line {records.lines[i]} ({', '.join(sorted({f.kind for f in findings[i]}))})"
        for i in held[:MAX_LISTED]
    )
    more = f" and {len(held) - MAX_LISTED} more" if len(held) > MAX_LISTED else ""
    return (
        f"data.pii=refuse: {len(held)} text(s) hold personal data: {shown}{more}; remove it, "
        "or set data.pii=mask to replace it with <KIND> placeholders before training"
    )
