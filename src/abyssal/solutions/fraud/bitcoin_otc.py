"""The Bitcoin-OTC trust network with REV2 fraud ground truth and the TGBase splits.

Bitcoin-OTC is a who-trusts-whom network of people who trade Bitcoin on the OTC platform: each edge
is one user rating another from -10 (total distrust) to +10 (total trust) at a time (SNAP; Kumar et
al., ICDM 2016). The ground truth marks 180 users as fraudulent and 136 as benign (REV2, Kumar et
al., WSDM 2018); the ten node splits are those of TGBase (Poursafaei et al., SDM 2022). Report the
mean and standard deviation over the ten splits.

Files under the data folder (see ``../shared/datasets/README.md``)::

    otc_network.csv            no header: source,target,rating,timestamp
    otc_gt.csv                 no header: user,label with -1 fraudulent, +1 benign
    masks/masks_0..9.csv       node,train_mask,val_mask,test_mask,label,is_anchor

The folder is ``root`` when given, else ``$ABYSSAL_BITCOIN_OTC``, else
``../shared/datasets/bitcoin_otc`` relative to the current folder.
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from abyssal.core.atomic import write_bytes_atomic
from abyssal.core.errors import DataError
from abyssal.data.tables import ColumnSpec, check_unique, first_row, read_table, validate_columns
from abyssal.solutions.fraud.schema import EdgeListData, check_known_nodes

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DataSource:
    """Where the public data lives.

    Attributes:
        snap_page: the SNAP dataset page.
        snap_csv: the gzipped edge list on SNAP.
        tgbase_repo: the TGBase repository (ground truth copy and the ten splits; MIT licence).
        tgbase_raw: base URL of the raw files of that repository.
        rev2_page: the REV2 project page (origin of the ground truth).
    """

    snap_page: str
    snap_csv: str
    tgbase_repo: str
    tgbase_raw: str
    rev2_page: str


SOURCE = DataSource(
    snap_page="https://snap.stanford.edu/data/soc-sign-bitcoin-otc.html",
    snap_csv="https://snap.stanford.edu/data/soc-sign-bitcoinotc.csv.gz",
    tgbase_repo="https://github.com/fpour/TGBase",
    tgbase_raw="https://raw.githubusercontent.com/fpour/TGBase/master",
    rev2_page="https://cs.stanford.edu/~srijan/rev2/",
)
ENV_VAR = "ABYSSAL_BITCOIN_OTC"
DEFAULT_ROOT = Path("../shared/datasets/bitcoin_otc")
N_SPLITS = 10
NETWORK_FILE = "otc_network.csv"
GROUND_TRUTH_FILE = "otc_gt.csv"
# Paths inside the TGBase repository; its history has held the files in more than one place, so
# each has candidates, tried in order.
TGBASE_PATHS = {
    GROUND_TRUTH_FILE: ("data/otc/otc_gt.csv", "data/otc_gt.csv"),
    "masks/masks_{k}.csv": ("data/otc/masks/masks_{k}.csv", "data/masks/masks_{k}.csv"),
}

_EDGE_SPECS = (
    ColumnSpec("source", "id"),
    ColumnSpec("target", "id"),
    ColumnSpec("rating", "number"),
    ColumnSpec("timestamp", "timestamp"),
)
_GT_SPECS = (ColumnSpec("node", "id"), ColumnSpec("rev2", "number"))
_MASK_SPECS = (
    ColumnSpec("node", "id"),
    ColumnSpec("train_mask", "label"),
    ColumnSpec("val_mask", "label"),
    ColumnSpec("test_mask", "label"),
    ColumnSpec("label", "label"),
    ColumnSpec("is_anchor", "label", required=False),
)


@dataclass
class BitcoinOTC:
    """The loaded network and ground truth.

    Attributes:
        edges: ``source``, ``target`` (text ids), ``rating`` (float64, -10..10), ``timestamp``
            (int64 Unix seconds), in file order.
        labels: ``node``, ``label`` for the 316 users with ground truth (1 = fraudulent,
            0 = benign).
        root: the folder the files came from.
    """

    edges: pd.DataFrame
    labels: pd.DataFrame
    root: Path

    def nodes(self) -> pd.Index:
        """Every user in the network, in order of first appearance."""
        return self.as_edge_list().nodes()

    def as_edge_list(self) -> EdgeListData:
        """The network in the generic edge-list form, the rating as the edge ``weight``."""
        edges = self.edges.rename(columns={"rating": "weight"})
        return EdgeListData(edges[["source", "target", "timestamp", "weight"]], self.labels)


@dataclass
class SplitMasks:
    """One of the ten TGBase node splits.

    Attributes:
        k: the split number, 0..9.
        nodes: (N,) node ids as text.
        train, val, test: (N,) boolean masks; each node is in exactly one.
        labels: (N,) int8, 1 for the fraudulent users, 0 for all others.
        anchor: (N,) boolean, True for the users with REV2 ground truth.
    """

    k: int
    nodes: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    anchor: np.ndarray


def resolve_root(root: PathLike | None = None) -> Path:
    """The Bitcoin-OTC folder: ``root``, else ``$ABYSSAL_BITCOIN_OTC``, else the shared default.

    Args:
        root: an explicit folder.

    Returns:
        The folder, which exists.

    Raises:
        DataError: the folder does not exist; the message says where to get the data.

    Example:
        >>> resolve_root("../shared/datasets/bitcoin_otc")  # doctest: +SKIP
        PosixPath('../shared/datasets/bitcoin_otc')
    """
    if root is not None:
        path, how = Path(root), "the folder given"
    elif os.environ.get(ENV_VAR):
        path, how = Path(os.environ[ENV_VAR]), f"from ${ENV_VAR}"
    else:
        path, how = DEFAULT_ROOT, "the default, relative to the current folder"
    if not path.is_dir():
        raise DataError(
            f"Bitcoin-OTC data folder not found ({how}; absolute: {path.absolute()}). It should "
            f"hold {NETWORK_FILE}, {GROUND_TRUTH_FILE} and masks/masks_0..9.csv: run "
            "abyssal.solutions.fraud.bitcoin_otc.download_bitcoin_otc(folder), or get the network "
            f"from {SOURCE.snap_page} and the ground truth and splits from {SOURCE.tgbase_repo}; "
            f"then pass the folder or set {ENV_VAR}",
            path=path,
        )
    return path


def load_bitcoin_otc(root: PathLike | None = None) -> BitcoinOTC:
    """Load and check the network and the REV2 ground truth.

    Args:
        root: the data folder (see :func:`resolve_root`).

    Returns:
        The :class:`BitcoinOTC` data: 35,592 edges among 5,881 users, 316 labelled (180 fraudulent).

    Raises:
        DataError: a missing folder or file, or a bad row (named by file, row and column).

    Example:
        >>> otc = load_bitcoin_otc()  # doctest: +SKIP
        >>> int(otc.labels["label"].sum())  # doctest: +SKIP
        180
    """
    root = resolve_root(root)
    path = root / NETWORK_FILE
    edges = validate_columns(
        read_table(path, names=[s.name for s in _EDGE_SPECS]), _EDGE_SPECS, path
    )
    row = first_row((edges["rating"].abs() > 10).to_numpy())
    if row is not None:
        rating = edges["rating"].iloc[row - 1]
        raise DataError(
            f"rating must be in -10..10, got {rating}", path=path, row=row, column="rating"
        )
    data = BitcoinOTC(edges, pd.DataFrame(), root)
    data.labels = _read_ground_truth(root / GROUND_TRUTH_FILE, data.nodes())
    return data


def _read_ground_truth(path: Path, nodes: pd.Index) -> pd.DataFrame:
    """REV2's ``user,label`` (-1 fraudulent, +1 benign) as ``node,label`` (1 fraudulent, 0 not)."""
    truth = validate_columns(read_table(path, names=[s.name for s in _GT_SPECS]), _GT_SPECS, path)
    row = first_row(~truth["rev2"].isin((-1.0, 1.0)).to_numpy())
    if row is not None:
        value = truth["rev2"].iloc[row - 1]
        raise DataError(
            f"expected -1 (fraudulent) or +1 (benign), got {value}",
            path=path,
            row=row,
            column="label",
        )
    check_known_nodes(truth, nodes, path, network="network")
    labels = (truth["rev2"] == -1).astype("int8")
    return pd.DataFrame({"node": truth["node"], "label": labels})


def load_split(root: PathLike | None, k: int) -> SplitMasks:
    """Load the TGBase split ``masks/masks_k.csv``.

    Args:
        root: the data folder (see :func:`resolve_root`); ``None`` for the default.
        k: the split number, 0..9.

    Returns:
        The :class:`SplitMasks` (split 0: 3,736 / 1,078 / 1,067 users).

    Raises:
        DataError: ``k`` out of range, a missing file, a bad row, or a node in no split or several.

    Example:
        >>> split = load_split(None, 0)  # doctest: +SKIP
        >>> int(split.train.sum()), int(split.val.sum()), int(split.test.sum())  # doctest: +SKIP
        (3736, 1078, 1067)
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k < N_SPLITS:
        raise DataError(f"split {k!r} does not exist; choose one of 0..{N_SPLITS - 1}")
    path = resolve_root(root) / "masks" / f"masks_{k}.csv"
    masks = validate_columns(read_table(path), _MASK_SPECS, path)
    check_unique(masks, "node", path)
    count = masks["train_mask"] + masks["val_mask"] + masks["test_mask"]
    row = first_row((count != 1).to_numpy())
    if row is not None:
        n = int(count.iloc[row - 1])
        raise DataError(
            f"node is in {n} of train/val/test; expected exactly one", path=path, row=row
        )
    anchor = masks["is_anchor"] if "is_anchor" in masks else pd.Series(np.ones(len(masks)))
    return SplitMasks(
        k=int(k),
        nodes=masks["node"].to_numpy(dtype=object),
        train=masks["train_mask"].to_numpy(dtype=bool),
        val=masks["val_mask"].to_numpy(dtype=bool),
        test=masks["test_mask"].to_numpy(dtype=bool),
        labels=masks["label"].to_numpy(dtype=np.int8),
        anchor=anchor.to_numpy(dtype=bool),
    )


def download_bitcoin_otc(
    dest: PathLike,
    *,
    snap_url: str = SOURCE.snap_csv,
    tgbase_base: str = SOURCE.tgbase_raw,
    timeout: float = 60.0,
) -> Path:
    """Download the network (SNAP), the ground truth and the ten splits (TGBase) into ``dest``.

    Everything is fetched into memory first (about 2 MB) and only then written, each file through
    a temporary file and a rename: a failed download leaves no new or half-written file behind.

    Args:
        dest: the folder to fill (created if needed); existing files are replaced.
        snap_url: URL of SNAP's ``soc-sign-bitcoinotc.csv.gz`` (gzipped or plain CSV).
        tgbase_base: base URL of the TGBase repository's raw files.
        timeout: seconds to wait for each response.

    Returns:
        ``dest``, ready for :func:`load_bitcoin_otc`.

    Raises:
        DataError: a file could not be downloaded or decompressed (the URLs tried are named).

    Example:
        >>> download_bitcoin_otc("data/bitcoin_otc")  # doctest: +SKIP
        PosixPath('data/bitcoin_otc')
    """
    dest = Path(dest)
    network = _fetch(snap_url, timeout)
    if network[:2] == b"\x1f\x8b":  # gzip magic number
        try:
            network = gzip.decompress(network)
        except (OSError, EOFError) as exc:
            raise DataError(f"could not decompress {snap_url}: {exc}") from exc
    files = {NETWORK_FILE: network}
    files[GROUND_TRUTH_FILE] = _fetch_first(tgbase_base, TGBASE_PATHS[GROUND_TRUTH_FILE], timeout)
    for k in range(N_SPLITS):
        candidates = [p.format(k=k) for p in TGBASE_PATHS["masks/masks_{k}.csv"]]
        files[f"masks/masks_{k}.csv"] = _fetch_first(tgbase_base, candidates, timeout)
    for name, content in files.items():
        write_bytes_atomic(dest / name, content)
    return dest


def _fetch(url: str, timeout: float) -> bytes:
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("https", "http", "file"):
        raise DataError(f"cannot download {url}: expected an https://, http:// or file:// URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataError(f"could not download {url}: {getattr(exc, 'reason', exc)}") from exc


def _fetch_first(base: str, paths: tuple[str, ...] | list[str], timeout: float) -> bytes:
    """The first of ``base/path`` that downloads."""
    urls = [f"{base.rstrip('/')}/{p}" for p in paths]
    for url in urls[:-1]:
        try:
            return _fetch(url, timeout)
        except DataError:
            continue
    try:
        return _fetch(urls[-1], timeout)
    except DataError as exc:
        raise DataError(f"could not download any of {', '.join(urls)} ({exc})") from exc


__all__ = [
    "DEFAULT_ROOT",
    "ENV_VAR",
    "SOURCE",
    "BitcoinOTC",
    "DataSource",
    "SplitMasks",
    "download_bitcoin_otc",
    "load_bitcoin_otc",
    "load_split",
    "resolve_root",
]
