"""The docker build context of a deployment: two serving images (CPU and CUDA) that carry the
abyssal source, exactly pinned packages and a model store holding only the versions the tiers
serve, plus the Kubernetes manifests that run them.

Layout of the context (``abyssal deploy build FILE --out DIR``)::

    Dockerfile.cpu, Dockerfile.cuda   multi-stage: a builder venv, a slim non-root runtime
    .dockerignore
    requirements.lock                 name==version of every runtime package (torch's aside)
    pyproject.toml, README.md, src/abyssal/
    store/                            the exported model store ($ABYSSAL_HOME in the image)
    k8s/                              tier-<name>.yaml per served tier, router.yaml

The lock is what is installed here, so an image runs the versions this machine tested; torch and
torchvision are pinned in the Dockerfiles, installed from the PyTorch index of the image's flavour
(CPU, or the CUDA build matching the base image).

Example:
    >>> ctx = build_context(load_deployment("deployments/tabular.yaml"), Path("build/tabular"))
    >>> ctx.build_commands()[0]
    'docker build -f build/tabular/Dockerfile.cpu -t abyssal:0.1.0-cpu build/tabular'
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import abyssal
from abyssal.core.atomic import fsync_dir, write_text_atomic
from abyssal.core.errors import ConfigError, MissingDependencyError
from abyssal.core.store import ModelStore
from abyssal.core.store_export import export_versions
from abyssal.deploy.kube import PORT, RUN_AS_UID, image_ref, is_cuda, write_manifests
from abyssal.deploy.spec import DeploymentConfig

__all__ = [
    "CUDA_IMAGES",
    "PYTHON_IMAGE",
    "PYTHON_VERSION",
    "UV_IMAGE",
    "BuildContext",
    "Pins",
    "build_context",
    "pin_requirements",
]

PYTHON_VERSION = "3.11.13"
"""The CPython of both images (the project targets 3.11)."""

PYTHON_IMAGE = f"python:{PYTHON_VERSION}-slim-bookworm"
"""The CPU image's base, builder and runtime."""

UV_IMAGE = "ghcr.io/astral-sh/uv:0.8.22"
"""Where the CUDA builder gets ``uv``, which installs CPython there (Ubuntu has no 3.11)."""

CUDA_IMAGES = {
    "12.6": "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04",
    "12.8": "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04",
    "12.9": "nvidia/cuda:12.9.1-cudnn-runtime-ubuntu24.04",
    "13.0": "nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04",
}
"""The CUDA image's base for each CUDA release torch is built for (``torch.version.cuda``)."""

DEFAULT_CUDA = "12.8"
"""The CUDA release of the image when the torch installed here is a CPU build."""

TORCH_INDEX = "https://download.pytorch.org/whl"
TORCH_PACKAGES = ("torch", "torchvision")
"""Pinned in the Dockerfiles and installed from the PyTorch index, not from the lock."""

SETUPTOOLS_FALLBACK = "80.9.0"
"""The setuptools that builds the abyssal wheel when none is installed here."""

_HARDWARE = re.compile(r"^(nvidia-|cuda-|triton$|pytorch-triton)")
"""Packages torch pulls for one accelerator: left to the PyTorch index of the image's flavour."""

_TARGET = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": PYTHON_VERSION.rsplit(".", 1)[0],
    "python_full_version": PYTHON_VERSION,
}
"""The environment markers of the images (``uvloop; sys_platform != 'win32'`` is in)."""


@dataclasses.dataclass(frozen=True)
class Pins:
    """The image's packages: ``lock`` (``name==version`` lines) and ``torch`` (``torch`` and,
    when needed, ``torchvision`` -> version, installed from the PyTorch index)."""

    lock: tuple[str, ...]
    torch: dict[str, str]
    extras: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """A written build context (see the module's docstring for its layout).

    Attributes:
        root: the context folder.
        dockerfiles: ``cpu`` / ``cuda`` -> its Dockerfile.
        images: ``cpu`` / ``cuda`` -> the image ref the manifests use.
        refs: model ref in the deployment file -> its ref in the image's store.
        pins: the packages locked in ``requirements.lock`` and the torch pins.
        cuda: the CUDA release of the CUDA image.
        manifests: the Kubernetes files under ``k8s/``.
    """

    root: Path
    dockerfiles: dict[str, Path]
    images: dict[str, str]
    refs: dict[str, str]
    pins: Pins
    cuda: str
    manifests: tuple[Path, ...]

    def build_commands(self) -> list[str]:
        """The ``docker build`` lines for both images."""
        return [
            f"docker build -f {self.dockerfiles[flavour]} -t {self.images[flavour]} {self.root}"
            for flavour in ("cpu", "cuda")
        ]


def build_context(
    cfg: DeploymentConfig,
    out: Path,
    *,
    store: ModelStore | None = None,
    cuda: str | None = None,
) -> BuildContext:
    """Write the docker build context of ``cfg`` into ``out``.

    Everything is written into a temporary folder beside ``out`` and renamed onto it at the end,
    so a failure leaves no half-written context.

    Args:
        cfg: the deployment.
        out: a new or empty folder.
        store: where the served models come from (default: ``$ABYSSAL_HOME``).
        cuda: the CUDA release of the CUDA image, a key of :data:`CUDA_IMAGES` (default: the
            installed torch's, else :data:`DEFAULT_CUDA`).

    Returns:
        What was written.

    Raises:
        ConfigError: ``out`` is not empty, an unknown CUDA release, a package the images need is
            not installed here (named), or a manifest problem (see
            :func:`~abyssal.deploy.kube.manifests`).
        StoreError: a served model ref does not resolve.
    """
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"build context '{out}' exists and is not an empty folder; give a new one"
        )
    cuda = _cuda_release(cuda)
    store = store if store is not None else ModelStore()
    served = [t for t in cfg.tiers if not t.urls]  # a tier with urls runs elsewhere
    refs = list(dict.fromkeys(ref for t in served for ref in t.models))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.pid{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        mapping = export_versions(store, refs, tmp / "store") if refs else {}
        (tmp / "store").mkdir(exist_ok=True)
        exported = ModelStore(tmp / "store").list_versions() if refs else []
        pins = pin_requirements(
            {mv.solution for mv in exported},
            packages=_extra_packages(cfg, {a.role for mv in exported for a in mv.artifacts}),
        )
        _write_source(tmp)
        write_text_atomic(tmp / "requirements.lock", _lock_text(pins))
        write_text_atomic(tmp / ".dockerignore", _template("dockerignore"))
        dockerfiles = {}
        for flavour in ("cpu", "cuda"):
            text = _dockerfile(cfg, flavour, cuda, pins, mapping)
            dockerfiles[flavour] = write_text_atomic(tmp / f"Dockerfile.{flavour}", text)
        written = write_manifests(cfg, tmp / "k8s", mapping)
        try:
            os.replace(tmp, out)
        except OSError as exc:
            raise ConfigError(f"cannot move the build context into '{out}': {exc}") from exc
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildContext(
        root=out,
        dockerfiles={k: out / p.name for k, p in dockerfiles.items()},
        images={k: image_ref(cfg, k) for k in ("cpu", "cuda")},
        refs=mapping,
        pins=pins,
        cuda=cuda,
        manifests=tuple(out / "k8s" / p.name for p in written),
    )


def pin_requirements(solutions: Iterable[str] = (), packages: Iterable[str] = ()) -> Pins:
    """Exact pins, from what is installed here, of everything abyssal needs to serve
    ``solutions``: its base dependencies, the ``serve`` extra (and a ``deploy`` extra when the
    package declares one), the extra named like each solution, ``packages``, and all of their
    dependencies, for the images' platform (Linux, CPython 3.11).

    torch and torchvision go to :attr:`Pins.torch`; the accelerator packages torch pulls
    (``nvidia-*``, ``triton``) are left to the PyTorch index.

    Raises:
        ConfigError: a needed package is not installed here (each is named).
    """
    try:
        from packaging.requirements import Requirement
    except ImportError as exc:
        raise MissingDependencyError(
            f"'packaging' is needed to lock the image's packages: pip install packaging ({exc})"
        ) from exc
    declared = set(metadata.metadata("abyssal").get_all("Provides-Extra") or [])
    extras = {"serve", *(e for e in ("deploy", *solutions) if e in declared)}
    todo: list[tuple[str, frozenset[str]]] = [("abyssal", frozenset(extras))]
    todo += [(name, frozenset()) for name in packages]
    seen: dict[str, frozenset[str]] = {}
    found: dict[str, tuple[str, str]] = {}
    missing: set[str] = set()
    while todo:
        name, wanted = todo.pop()
        key = _canonical(name)
        if _HARDWARE.match(key) or (key in seen and wanted <= seen[key]):
            continue
        seen[key] = seen.get(key, frozenset()) | wanted
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(name)
            continue
        found[key] = (dist.metadata["Name"], dist.version)
        for line in dist.requires or []:
            req = Requirement(line)
            marker = req.marker
            if marker is None or any(
                marker.evaluate({**_TARGET, "extra": e}) for e in ("", *sorted(seen[key]))
            ):
                todo.append((req.name, frozenset(req.extras)))
    if missing:
        raise ConfigError(
            f"the images need {', '.join(sorted(missing))}, not installed here: install them "
            f"(pip install 'abyssal[{','.join(sorted(extras))}]') so that the lock pins the "
            "versions tested on this machine"
        )
    found.pop("abyssal", None)
    torch = {}
    for key in TORCH_PACKAGES:
        if key in found:
            torch[key] = found.pop(key)[1].split("+", 1)[0]  # 2.5.1+cu124 -> 2.5.1
    lock = tuple(sorted(f"{name}=={version}" for name, version in found.values()))
    return Pins(lock=lock, torch=torch, extras=tuple(sorted(extras)))


def _canonical(name: str) -> str:
    """PEP 503's normalized name: ``Scikit_Learn`` -> ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _extra_packages(cfg: DeploymentConfig, roles: set[str]) -> list[str]:
    """Packages beyond the extras: the router's HTTP client (the router runs from the CPU
    image), ONNX Runtime for ONNX artifacts, the phone-number detector for the PII check."""
    packages = ["httpx"]
    if "onnx" in roles:
        packages.append("onnxruntime")
    if cfg.policies.sensitivity.pii:
        packages.append("phonenumbers")
    return packages


def _cuda_release(cuda: str | None) -> str:
    """The CUDA release of the CUDA image: ``cuda``, else the installed torch's, else default."""
    if cuda is None:
        try:
            import torch

            cuda = torch.version.cuda or DEFAULT_CUDA
        except ImportError:
            cuda = DEFAULT_CUDA
        cuda = ".".join(cuda.split(".")[:2])
        if cuda not in CUDA_IMAGES:
            cuda = DEFAULT_CUDA
    if cuda not in CUDA_IMAGES:
        raise ConfigError(
            f"no CUDA base image for CUDA {cuda!r}; choose one of: {', '.join(CUDA_IMAGES)}"
        )
    return cuda


def _lock_text(pins: Pins) -> str:
    torch = ", ".join(f"{k}=={v}" for k, v in pins.torch.items())
    head = [
        f"# abyssal {abyssal.__version__} deploy build: the runtime packages installed where the",
        f"# context was written (extras: {', '.join(pins.extras)}), for Linux and CPython",
        f"# {PYTHON_VERSION}. {torch} come from the PyTorch index (see the Dockerfiles).",
    ]
    return "\n".join([*head, *pins.lock]) + "\n"


def _write_source(root: Path) -> None:
    """``src/abyssal``, ``pyproject.toml`` (the repository's, else a minimal one), ``README.md``."""
    package = Path(abyssal.__file__).resolve().parent
    shutil.copytree(
        package,
        root / "src" / "abyssal",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*.tmp"),
    )
    repo = package.parents[1]
    if (repo / "pyproject.toml").is_file():
        shutil.copyfile(repo / "pyproject.toml", root / "pyproject.toml")
    else:
        write_text_atomic(root / "pyproject.toml", _minimal_pyproject())
    if (repo / "README.md").is_file():
        shutil.copyfile(repo / "README.md", root / "README.md")
    else:
        write_text_atomic(root / "README.md", "# abyssal\n\nThe serving image's package.\n")


def _minimal_pyproject() -> str:
    """Enough for setuptools to build the wheel; dependencies come from ``requirements.lock``."""
    return f"""[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "abyssal"
version = "{abyssal.__version__}"
readme = "README.md"
requires-python = ">=3.11"

[project.scripts]
abyssal = "abyssal.cli.main:main"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
"abyssal.deploy" = ["templates/*"]
"""


def _build_pins() -> str:
    """The tools that build the abyssal wheel, at the versions installed here."""
    pins = []
    for name, fallback in (("setuptools", SETUPTOOLS_FALLBACK), ("wheel", None)):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            if fallback is not None:
                pins.append(f"{name}=={fallback}")
    return " ".join(pins)


def _dockerfile(
    cfg: DeploymentConfig, flavour: str, cuda: str, pins: Pins, refs: Mapping[str, str]
) -> str:
    """One Dockerfile from its template. Its default command serves the models of the tiers of
    this flavour (every served model when no tier has it)."""
    served = [t for t in cfg.tiers if not t.urls]
    mine = [t for t in served if is_cuda(t) == (flavour == "cuda")] or served
    models = list(dict.fromkeys(refs.get(ref, ref) for t in mine for ref in t.models))
    device = "cuda" if flavour == "cuda" else "cpu"
    cmd = [*models, "--host", "0.0.0.0", "--port", str(PORT), "--device", device]
    slowest = max((t.startup_s for t in served), default=10.0)
    index = f"{TORCH_INDEX}/{'cu' + cuda.replace('.', '') if flavour == 'cuda' else 'cpu'}"
    cuda_image = CUDA_IMAGES[cuda]
    values = {
        "deployment": cfg.name,
        "image": image_ref(cfg, flavour),
        "python_image": PYTHON_IMAGE,
        "python_version": PYTHON_VERSION,
        "python_minor": PYTHON_VERSION.rsplit(".", 1)[0],
        "uv_image": UV_IMAGE,
        "cuda_image": cuda_image,
        "cuda": cuda,
        "ubuntu": cuda_image.rsplit("ubuntu", 1)[-1],
        "torch_index": index,
        "torch_pins": " ".join(f"{k}=={v}" for k, v in pins.torch.items()),
        "build_pins": _build_pins(),
        "wheel": f"abyssal-{abyssal.__version__}-py3-none-any.whl",
        "uid": str(RUN_AS_UID),
        "start_period_s": str(max(60, math.ceil(3 * slowest))),
        "cmd": json.dumps(cmd),
    }
    if not pins.torch:
        raise ConfigError("the images need torch, which is not installed here")
    return _template(f"Dockerfile.{flavour}", values)


def _template(name: str, values: Mapping[str, str] | None = None) -> str:
    """A file of ``abyssal/deploy/templates`` with its ``{{key}}`` places filled."""
    text = resources.files("abyssal.deploy").joinpath("templates", name).read_text("utf-8")
    values = values or {}
    unknown = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)) - set(values))
    if unknown:
        raise ConfigError(f"template {name}: no value for {unknown}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)
