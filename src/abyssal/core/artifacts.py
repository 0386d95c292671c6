"""Typed artifacts of a model version, and the external bases a version may build on.

A model version holds a set of artifacts, each a content-addressed file with a ``name`` (its file
name within the version: ``model.safetensors``, ``adapter_config.json``, ``model.onnx``), a ``role``
(what it is for) and a ``format`` (how it is encoded). :class:`ArtifactSource` says what to store;
the store turns it into an :class:`ArtifactRecord` once the file is written. A version may name a
``base`` it builds on: another stored version, or an :class:`ExternalBase` such as a Hugging Face
model folder, identified by a fingerprint of its files.

Example:
    >>> sources = [
    ...     ArtifactSource.tensors("adapter_model.safetensors", "adapter", lora_state),
    ...     ArtifactSource.json("adapter_config.json", "aux", {"r": 8, "lora_alpha": 16}),
    ... ]  # doctest: +SKIP
    >>> store.register("text-lora", artifacts=sources, base="text:3", solution="text",
    ...                config=cfg, metrics={})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from abyssal.core.digest import CHUNK_BYTES, fingerprint_path
from abyssal.core.errors import StoreError

ARTIFACT_ROLES = ("weights", "adapter", "onnx", "tokenizer", "quantized", "engine", "aux")
"""What an artifact is for. ``weights``: the model's own parameters (at most one per version);
``adapter``: parameters added on top of a base (LoRA); ``quantized``: low-precision weights;
``onnx``, ``tokenizer``, ``engine`` (a compiled engine), ``aux``: anything else (configs)."""

TENSOR_ROLES = ("weights", "adapter", "quantized")
"""Roles whose safetensors files are loaded into the torch model by ``load_model``."""

WEIGHTS_NAME = "model.safetensors"
"""The name of the weights artifact that ``register(name, state_dict, ...)`` creates."""

FORMAT_BY_SUFFIX = {
    ".safetensors": "safetensors",
    ".onnx": "onnx",
    ".json": "json",
    ".txt": "text",
    ".bin": "bin",
    ".model": "bin",
    ".engine": "engine",
    ".plan": "engine",
}
"""The format :meth:`ArtifactSource.file` assumes from a file's suffix."""

ARTIFACT_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
FORMAT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
KIND_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclasses.dataclass(frozen=True)
class ArtifactRecord:
    """One stored artifact of a model version.

    Args:
        name: file name within the version, unique per version.
        role: one of :data:`ARTIFACT_ROLES`.
        format: ``safetensors``, ``onnx``, ``json``, ``text``, ``bin``, ...
        sha256: SHA-256 of the file; the file lives at ``blobs/<sha[:2]>/<sha256>.<format>``.
        size: bytes; ``None`` for a version migrated from a store whose file was already missing.
        meta: small JSON dict, e.g. ``{"state": ...}`` for a flattened non-dense state dict.

    Example:
        >>> store.resolve("text-lora:1").artifacts[0].name  # doctest: +SKIP
        'adapter_config.json'
    """

    name: str
    role: str
    format: str
    sha256: str
    size: int | None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ArtifactSource:
    """What to store as one artifact; build it with :meth:`tensors`, :meth:`file`, :meth:`bytes`
    or :meth:`json`, which validate everything before anything is written.

    Args:
        name: file name within the version (``[A-Za-z0-9_][A-Za-z0-9_.-]*``, no folders).
        role: one of :data:`ARTIFACT_ROLES`.
        format: how the file is encoded.
        kind: ``"tensors"``, ``"file"`` or ``"bytes"``: what ``content`` holds.
        content: flattened tensors, a file path, or the bytes themselves.
        meta: stored with the record (the flattening description of a state dict).
    """

    name: str
    role: str
    format: str
    kind: str
    content: Any = dataclasses.field(repr=False)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_artifact_name(self.name)
        check_role(self.role)
        if not isinstance(self.format, str) or not FORMAT_RE.fullmatch(self.format):
            raise StoreError(
                f"artifact '{self.name}': bad format {self.format!r}; use 1-32 characters from "
                "a-z 0-9 _ -, e.g. safetensors, onnx, json, text, bin"
            )
        if self.role in TENSOR_ROLES and self.format != "safetensors":
            raise StoreError(
                f"artifact '{self.name}' has role '{self.role}', which needs format "
                f"'safetensors', not '{self.format}'"
            )
        try:
            json.dumps(self.meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"artifact '{self.name}': meta is not JSON-serialisable: {exc}"
            ) from None

    @classmethod
    def tensors(cls, name: str, role: str, state_dict: Mapping[str, Any]) -> ArtifactSource:
        """A state dict, saved as safetensors; non-dense values are flattened (see
        :func:`~abyssal.core.state_flatten.flatten_state`).

        Example:
            >>> ArtifactSource.tensors("model.safetensors", "weights", model.state_dict())
            ... # doctest: +SKIP
        """
        from abyssal.core.state_flatten import flatten_state

        try:
            tensors, state_meta = flatten_state(state_dict)
        except StoreError as exc:
            raise StoreError(f"artifact '{name}': {exc}") from None
        meta = {"state": state_meta} if state_meta else {}
        return cls(name, role, "safetensors", "tensors", tensors, meta)

    @classmethod
    def file(
        cls, name: str, role: str, path: str | Path, format: str | None = None
    ) -> ArtifactSource:
        """An existing file, copied into the store; ``format`` defaults from the suffix.

        Example:
            >>> ArtifactSource.file("model.onnx", "onnx", "exports/model.onnx")  # doctest: +SKIP
        """
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"artifact '{name}': '{path}' is not a file")
        if format is None:
            format = FORMAT_BY_SUFFIX.get(path.suffix.lower())
        if format is None:
            known = ", ".join(f"{k} ({v})" for k, v in FORMAT_BY_SUFFIX.items())
            raise StoreError(
                f"artifact '{name}': cannot tell the format of '{path.name}' from its suffix "
                f"(known: {known}); pass format="
            )
        return cls(name, role, format, "file", path)

    @classmethod
    def bytes(cls, name: str, role: str, data: bytes, format: str) -> ArtifactSource:
        """Bytes already in memory (a small config or vocabulary).

        Example:
            >>> ArtifactSource.bytes("vocab.txt", "tokenizer", b"[PAD]\\n[UNK]\\n", "text")
            ... # doctest: +SKIP
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StoreError(f"artifact '{name}': data must be bytes, got {type(data).__name__}")
        return cls(name, role, format, "bytes", bytes(data))

    @classmethod
    def json(cls, name: str, role: str, obj: Any) -> ArtifactSource:
        """A JSON document (sorted keys, indented), e.g. an ``adapter_config.json``.

        Example:
            >>> ArtifactSource.json("adapter_config.json", "aux", {"r": 8})  # doctest: +SKIP
        """
        try:
            text = json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise StoreError(f"artifact '{name}' is not JSON-serialisable: {exc}") from None
        return cls(name, role, "json", "bytes", text.encode("utf-8"))

    def chunks(self) -> Iterator[bytes]:
        """The content of a ``file`` or ``bytes`` source, in chunks of at most 1 MiB."""
        if self.kind == "file":
            with Path(self.content).open("rb") as fh:
                yield from iter(lambda: fh.read(CHUNK_BYTES), b"")
            return
        view = memoryview(self.content)
        for start in range(0, len(view), CHUNK_BYTES):
            yield bytes(view[start : start + CHUNK_BYTES])


@dataclasses.dataclass(frozen=True)
class ExternalBase:
    """A base model kept outside the store, e.g. a Hugging Face model folder.

    The model builder loads its weights itself; the store records where it was and a fingerprint
    of its files, and ``load_model`` refuses a base whose files changed since registration.

    Args:
        uri: where it is: a local path or a hub id.
        fingerprint: :func:`~abyssal.core.digest.fingerprint_path` of the files at registration.
        kind: what it is, e.g. ``"huggingface"``.

    Example:
        >>> base = ExternalBase.from_path("models/bert-base")  # doctest: +SKIP
        >>> base.kind
        'huggingface'
    """

    uri: str
    fingerprint: str
    kind: str = "huggingface"

    def __post_init__(self) -> None:
        for field in ("uri", "fingerprint"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise StoreError(f"external base {field} must be a non-empty string")
        if not isinstance(self.kind, str) or not KIND_RE.fullmatch(self.kind):
            raise StoreError(f"external base kind {self.kind!r} must match {KIND_RE.pattern}")

    @classmethod
    def from_path(cls, path: str | Path, kind: str = "huggingface") -> ExternalBase:
        """The base at a local file or folder, fingerprinted now.

        Raises:
            StoreError: ``path`` does not exist.
        """
        path = Path(path).expanduser().absolute()
        if not path.exists():
            raise StoreError(f"external base '{path}' does not exist")
        return cls(uri=str(path), fingerprint=fingerprint_path(path), kind=kind)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExternalBase:
        """Read back :meth:`to_dict`."""
        return cls(uri=data["uri"], fingerprint=data["fingerprint"], kind=data["kind"])

    def to_dict(self) -> dict[str, str]:
        """``{"kind", "uri", "fingerprint"}``."""
        return {"kind": self.kind, "uri": self.uri, "fingerprint": self.fingerprint}

    def __str__(self) -> str:
        return f"{self.kind}:{self.uri}"


def check_artifact_name(name: str) -> None:
    """Refuse anything but a plain file name (no folders, no leading dot)."""
    if not isinstance(name, str) or not ARTIFACT_NAME_RE.fullmatch(name):
        raise StoreError(
            f"bad artifact name {name!r}: use a file name of 1-128 characters from "
            "A-Z a-z 0-9 _ . -, not starting with '.' or '-'"
        )


def check_role(role: str) -> None:
    """Refuse a role outside :data:`ARTIFACT_ROLES` (the message lists them)."""
    if role not in ARTIFACT_ROLES:
        raise StoreError(
            f"unknown artifact role {role!r}; choose one of: {', '.join(ARTIFACT_ROLES)}"
        )


def check_artifact_set(sources: list[ArtifactSource]) -> None:
    """Names unique within a version, at most one ``weights`` artifact."""
    names = [s.name for s in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise StoreError(f"artifact names must be unique within a version; repeated: {repeated}")
    weights = [s.name for s in sources if s.role == "weights"]
    if len(weights) > 1:
        raise StoreError(f"a version holds at most one 'weights' artifact, got {weights}")
