"""Export model versions into a new, self-contained model store (e.g. the one a container image
carries).

The new store holds the versions asked for and every version in their chains of bases, registered
again through :meth:`ModelStore.register` (bases first) with the same artifact files, solution,
config, metrics and lineage, so nothing in it depends on the store it came from. Version numbers
start again at 1 there, so a caller uses the mapping :func:`export_versions` returns: source ref ->
the ref that means the same version in the new store. Aliases named by the refs are recreated, so
``tabular:production`` still resolves.

The store is built in a temporary folder beside the destination and renamed into place at the end:
a failure leaves no half-written store.

Example:
    >>> export_versions(ModelStore(), ["tabular:production", "text:3"], Path("ctx/store"))
    {'tabular:production': 'tabular:production', 'text:3': 'text:2'}
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from abyssal.core.artifacts import ArtifactRecord, ArtifactSource, ExternalBase
from abyssal.core.atomic import fsync_dir
from abyssal.core.errors import StoreError
from abyssal.core.store import ModelStore, ModelVersion
from abyssal.core.versions import LATEST, parse_ref

__all__ = ["export_versions"]


def export_versions(store: ModelStore, refs: Sequence[str], dest: Path) -> dict[str, str]:
    """Copy the versions ``refs`` name, and their chains of bases, into a new store at ``dest``.

    Versions are registered again in chain order (bases first, then by name and version, so a
    name's newest exported version stays its newest); artifacts keep their bytes (checked by
    SHA-256), a version base is remapped to its new ref, an :class:`ExternalBase` is kept as it
    is, and a lineage ``parent`` becomes the parent's new ref when the parent is exported, else
    ``None`` (other lineage keys are kept). An alias ref (``tabular:production``) gets its alias
    in the new store; a version or latest ref (``tabular:3``, ``tabular``) maps to the pinned
    ``name:version`` of the new store.

    Args:
        store: the source store.
        refs: the refs to export (``name``, ``name:3``, ``name:alias``), at least one.
        dest: the new store's folder: missing or empty.

    Returns:
        Each ref of ``refs`` -> the ref to use in the new store.

    Raises:
        StoreError: no refs, ``dest`` is a file or not empty, an unknown ref, a broken chain, an
            artifact whose file is missing or corrupted, or a copy whose bytes differ.

    Example:
        >>> export_versions(store, ["tabular:3", "tabular:production"], Path("out/store"))
        {'tabular:3': 'tabular:1', 'tabular:production': 'tabular:production'}
    """
    dest = Path(dest).absolute()
    refs = list(refs)
    if not refs:
        raise StoreError("nothing to export: give at least one model ref (e.g. tabular:production)")
    _check_empty(dest)
    asked: dict[str, ModelVersion] = {}
    versions: dict[str, ModelVersion] = {}
    for ref in refs:
        chain = [link for link in store.chain(ref) if isinstance(link, ModelVersion)]
        asked[ref] = chain[0]  # a chain starts with the version the ref means
        for link in chain:
            versions.setdefault(link.ref, link)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.pid{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        new = ModelStore(tmp)
        moved: dict[str, str] = {}
        for mv in _chain_order(versions):
            moved[mv.ref] = _copy_version(store, new, mv, moved)
        mapping = {}
        for ref, mv in asked.items():
            name, selector = parse_ref(ref)
            if selector is None or selector == LATEST or selector.isdigit():
                mapping[ref] = moved[mv.ref]
            else:
                new.set_alias(name, selector, new.resolve(moved[mv.ref]).version)
                mapping[ref] = f"{name}:{selector}"
        leftovers = [p.name for p in tmp.iterdir() if p.name.startswith("store.db-")]
        if leftovers:  # every connection is closed: SQLite has folded its WAL into store.db
            raise StoreError(f"export to '{dest}': the new store still has {leftovers}")
        _move_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return mapping


def _check_empty(dest: Path) -> None:
    """Refuse a destination that is a file or a folder with anything in it."""
    if dest.exists() and not dest.is_dir():
        raise StoreError(f"cannot export models to '{dest}': it is a file, not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        raise StoreError(
            f"cannot export models to '{dest}': the folder is not empty (give a new or empty "
            "folder; an export never writes into an existing store)"
        )


def _chain_order(versions: dict[str, ModelVersion]) -> list[ModelVersion]:
    """The versions with each one after its base and its exported lineage parent."""
    done: dict[str, ModelVersion] = {}

    def visit(mv: ModelVersion) -> None:
        if mv.ref in done:
            return
        for dep in (mv.base, mv.lineage.get("parent")):
            if isinstance(dep, str) and dep in versions and dep != mv.ref:
                visit(versions[dep])
        done[mv.ref] = mv

    for mv in sorted(versions.values(), key=lambda v: (v.name, v.version)):
        visit(mv)
    return list(done.values())


def _copy_version(
    store: ModelStore, new: ModelStore, mv: ModelVersion, moved: dict[str, str]
) -> str:
    """Register ``mv`` in ``new`` (its bases already there, in ``moved``); its new ref."""
    sources = [_source(store, mv, record) for record in mv.artifacts]
    base: str | ExternalBase | None = mv.base
    if isinstance(base, str):
        base = moved[base]
    lineage = dict(mv.lineage)
    if lineage.get("parent") is not None:
        lineage["parent"] = moved.get(lineage["parent"])  # None: the parent stays behind
    copy = new.register(
        mv.name,
        artifacts=sources,
        base=base,
        solution=mv.solution,
        config=mv.config,
        metrics=mv.metrics,
        lineage=lineage,
        run_id=mv.run_id,
    )
    before = {a.name: a.sha256 for a in mv.artifacts}
    after = {a.name: a.sha256 for a in copy.artifacts}
    if before != after:
        raise StoreError(f"export of {mv.ref}: the copied artifacts differ ({before} != {after})")
    return copy.ref


def _source(store: ModelStore, mv: ModelVersion, record: ArtifactRecord) -> ArtifactSource:
    """An artifact of ``mv`` as a file source (checked against its SHA-256), meta included."""
    path = store.artifact_path(mv, record.name)
    source = ArtifactSource.file(record.name, record.role, path, format=record.format)
    return dataclasses.replace(source, meta=dict(record.meta))


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished store onto ``dest`` (missing, or an empty folder)."""
    try:
        os.replace(tmp, dest)
    except OSError as exc:
        raise StoreError(f"cannot move the exported store into '{dest}': {exc}") from exc
    fsync_dir(dest.parent)
