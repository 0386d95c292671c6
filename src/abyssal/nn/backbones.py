"""Image backbones by name: the registry ``model.backbone`` reads (:data:`BACKBONES`), with
torchvision's classification models, ``timm:NAME`` and the backbones plugins add.

Backbone plugins (entry-point group ``abyssal.backbones``): an installed package adds a backbone
by declaring a factory, e.g. ``tiny-cnn = "acme_vision:tiny_cnn"`` under
``[project.entry-points."abyssal.backbones"]``, and ``model.backbone=tiny-cnn`` uses it. The
factory is called as ``factory(channels)`` (1 for grey images, 3 for colour) and returns
``(module, features)``: a module mapping float images ``(B, channels, H, W)`` (already
normalised) to pooled features ``(B, features)``, and that width. Grad-CAM reads the module its
``cam_layer()`` method returns, if it has one, else its last child that holds a ``Conv2d``;
that module's output must be a feature map ``(B, K, h, w)``. The plugin is imported when a model
with that backbone is built; an import that fails names the package.

Example:
    >>> net, features = make_backbone("resnet18", channels=1)  # doctest: +SKIP
    >>> features
    512
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from abyssal.core.errors import ConfigError, MissingDependencyError
from abyssal.core.registry import Registry

BackboneFactory = Callable[[int], tuple[nn.Module, int]]
"""``factory(channels) -> (module, features)``: a feature extractor without trained weights,
mapping ``(B, channels, H, W)`` to ``(B, features)``."""

BACKBONES: Registry[BackboneFactory] = Registry("backbone", group="abyssal.backbones")
"""``model.backbone`` names: abyssal's torchvision backbones and the plugins' factories."""

TORCHVISION_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_v2_s",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "convnext_tiny",
    "convnext_small",
    "regnet_y_400mf",
    "regnet_y_800mf",
    "shufflenet_v2_x1_0",
    "vit_b_16",
)
"""torchvision models registered in :data:`BACKBONES` (listed; any other torchvision
classification model whose classifier can be dropped works by name too)."""


def torchvision_backbone(name: str, channels: int) -> tuple[nn.Module, int]:
    """torchvision's ``name`` without weights, its classifier replaced by the identity, its first
    convolution given ``channels`` inputs; and its feature width.

    Raises:
        ConfigError: torchvision has no such classification model (some names are listed).
    """
    from torchvision import models

    if name not in models.list_models(module=models):
        some = ", ".join(n for n in models.list_models(module=models) if n[:3] in ("res", "eff"))
        raise ConfigError(f"unknown model.backbone '{name}'; torchvision has e.g. {some}")
    net = models.get_model(name, weights=None)
    features = _drop_classifier(net, name)
    if channels != 3:
        _adapt_first_conv(net, channels)
    return net, features


for _name in TORCHVISION_BACKBONES:
    BACKBONES.add(_name, partial(torchvision_backbone, _name), summary=f"torchvision {_name}")


def make_backbone(name: str, channels: int) -> tuple[nn.Module, int]:
    """A feature extractor by name, without weights, and its output width.

    ``timm:NAME`` builds a timm model with ``num_classes=0`` (pooled features). A name in
    :data:`BACKBONES` calls its factory (a plugin's is imported then). Other names are torchvision
    classification models; their final classifier is replaced by the identity.

    Raises:
        ConfigError: an unknown name (the message lists some torchvision names and the
            registered backbones), or a plugin factory that fails or returns something else
            (named with its package).
        RegistryError: a plugin backbone that fails to import, or a name two packages claim.
        MissingDependencyError: ``timm:`` without timm installed.
    """
    if name in BACKBONES or name in BACKBONES.conflicts():
        return _from_factory(name, BACKBONES.get(name), channels)
    if name.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise MissingDependencyError(
                f"model.backbone={name} needs timm: pip install 'abyssal[timm]'"
            ) from None
        net = timm.create_model(name[5:], pretrained=False, num_classes=0, in_chans=channels)
        return net, int(net.num_features)
    try:
        return torchvision_backbone(name, channels)
    except ConfigError as exc:
        if not str(exc).startswith("unknown model.backbone"):
            raise
        plugins = [p.name for p in BACKBONES.plugins()]
        also = f"; plugins add: {', '.join(plugins)}" if plugins else ""
        raise ConfigError(f"{exc}; or timm:NAME{also}") from None


def is_plugin_backbone(name: str) -> bool:
    """``name`` is a backbone an installed package adds (not abyssal's, not torchvision's)."""
    return BACKBONES.origin(name) is not None


def _from_factory(name: str, factory: BackboneFactory, channels: int) -> tuple[nn.Module, int]:
    """Call a :data:`BACKBONES` factory and check what it gives; a plugin's failure names it."""
    origin = BACKBONES.origin(name)
    if origin is None:
        return factory(channels)
    who = f"model.backbone={name} (plugin package {origin.package} {origin.version})"
    try:
        made = factory(channels)
    except Exception as exc:
        raise ConfigError(f"{who} failed: {type(exc).__name__}: {exc}") from exc
    ok = isinstance(made, tuple) and len(made) == 2
    if not ok or not isinstance(made[0], nn.Module) or not _whole(made[1]):
        raise ConfigError(
            f"{who}: the factory must return (nn.Module, features > 0), got {made!r:.120}"
        )
    return made[0], int(made[1])


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _drop_classifier(net: nn.Module, name: str) -> int:
    """Replace the last linear layer (``fc`` or ``classifier``'s last) by the identity."""
    if isinstance(getattr(net, "fc", None), nn.Linear):
        features = net.fc.in_features
        net.fc = nn.Identity()
        return features
    classifier = getattr(net, "classifier", None)
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Linear):
        features = classifier[-1].in_features
        classifier[-1] = nn.Identity()
        return features
    if isinstance(getattr(net, "heads", None), nn.Sequential):  # vision transformers
        features = net.heads[-1].in_features
        net.heads = nn.Identity()
        return features
    raise ConfigError(f"model.backbone '{name}': no fc or classifier layer to replace")


def _first_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, leaf = name.rpartition(".")
            return net.get_submodule(parent_name) if parent_name else net, leaf, module
    raise ConfigError("the backbone has no Conv2d to take grey images")


def _adapt_first_conv(net: nn.Module, channels: int) -> None:
    """Give the first convolution ``channels`` inputs; its weights are the RGB weights summed
    (timm's ``adapt_input_conv``), so ImageNet weights loaded later still apply."""
    parent, leaf, conv = _first_conv(net)
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    setattr(parent, leaf, new)
