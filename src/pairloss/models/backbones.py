"""Backbone factory with local weight loading: timm and open_clip models, and a small CNN for this machine.

Foundation-model initialisation (Patel et al. fine-tune ImageNet/CLIP-pretrained ResNet-50 and ViT-B) means
building the architecture and loading pretrained weights. This module never downloads: weights come from a
local file (``weights=``: a ``state_dict`` saved with ``torch.save``, a checkpoint dict holding one under
``"state_dict"``/``"model"``/``"module"``, or a ``.safetensors`` file) or from the library's own local cache
(timm/open_clip with ``pretrained`` set and the files already present in their cache). timm and open_clip are
optional imports: ``"timm:<name>"`` and ``"open_clip:<name>"`` need them installed; ``"small_cnn"`` and
``"glyph_cnn"`` (:class:`~pairloss.models.cnn.GlyphCNN`, for 16×16 images) need nothing.

Every backbone returned is wrapped by :class:`EmbeddingHead`: features → linear → ``embedding_size``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pairloss.models.cnn import GlyphCNN

__all__ = ["EmbeddingHead", "SmallCNN", "build_backbone", "load_weights"]


class SmallCNN(nn.Module):
    """A small convolutional feature extractor for low-resolution grey-level images (``[N, C, H, W]`` →
    ``[N, F]``).

    Two conv–batch-norm–ReLU–pool stages (32 and 64 channels), global average pooling, ``F = 64``.
    """

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.num_features = 2 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        features: Tensor = self.features(x)
        return features


class EmbeddingHead(nn.Module):
    """``backbone`` followed by a linear embedding layer (the usual deep-metric-learning head)."""

    def __init__(self, backbone: nn.Module, num_features: int, embedding_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.embedding = nn.Linear(num_features, embedding_size)

    def forward(self, x: Tensor) -> Tensor:
        embedded: Tensor = self.embedding(self.backbone(x))
        return embedded


def _state_dict_from(obj: Any) -> Mapping[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "module"):
            if key in obj and isinstance(obj[key], Mapping):
                return _state_dict_from(obj[key])
        if all(isinstance(v, Tensor) for v in obj.values()):
            return obj
    raise ValueError("the weights file holds no state_dict (a mapping of parameter names to tensors)")


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load a local weights file into ``model`` (on the model's device) and return it.

    The ``module.`` prefix that ``DataParallel`` adds is removed. ``strict`` raises ``ValueError`` listing
    missing and unexpected keys. A file that is not a readable ``torch.save`` / safetensors file (truncated, text,
    another format) and tensors whose shapes differ from the model's raise ``ValueError`` naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            safetensors = importlib.import_module("safetensors.torch")
            state: Mapping[str, Tensor] = safetensors.load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise
    except Exception as error:  # torch and safetensors raise many kinds (RuntimeError, UnpicklingError, EOFError, ...)
        raise ValueError(f"{path} is not a readable weights file ({type(error).__name__}: {error})") from None
    try:
        state = _state_dict_from(state)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    renamed = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    expected = model.state_dict()
    mismatched = [
        f"{name} {tuple(value.shape)} (model {tuple(expected[name].shape)})"
        for name, value in renamed.items()
        if name in expected and value.shape != expected[name].shape
    ]
    if mismatched:
        raise ValueError(f"weights in {path} have other shapes than the model: {mismatched[:5]}")
    result = model.load_state_dict(renamed, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise ValueError(
            f"weights in {path} do not match the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this backbone needs the optional package {module!r}: pip install {module}") from error


def _build_features(name: str, in_channels: int, cache_pretrained: bool) -> tuple[nn.Module, int]:
    library, _, arch = name.partition(":")
    if name == "small_cnn":
        cnn = SmallCNN(in_channels)
        return cnn, cnn.num_features
    if name == "glyph_cnn":
        glyph_cnn = GlyphCNN(in_channels)
        return glyph_cnn, glyph_cnn.num_features
    if library == "timm" and arch:
        timm = _optional("timm")
        model = timm.create_model(arch, pretrained=cache_pretrained, num_classes=0, in_chans=in_channels)
        return model, int(model.num_features)
    if library == "open_clip" and arch:
        open_clip = _optional("open_clip")
        model_name, _, tag = arch.partition("@")
        clip = open_clip.create_model(model_name, pretrained=(tag or None) if cache_pretrained else None)
        visual = clip.visual
        return visual, int(visual.output_dim)
    raise ValueError(
        f"unknown backbone {name!r}: use 'small_cnn', 'glyph_cnn', 'timm:<arch>' or 'open_clip:<arch>[@<tag>]'"
    )


def build_backbone(
    name: str,
    embedding_size: int,
    *,
    in_channels: int = 1,
    weights: str | Path | None = None,
    weights_cover: str = "backbone",
    cache_pretrained: bool = False,
) -> EmbeddingHead:
    """Build a backbone with a linear embedding head, optionally initialised from local weights.

    Args:
        name: ``"small_cnn"``, ``"glyph_cnn"``, ``"timm:<architecture>"`` (e.g. ``timm:resnet50``) or
            ``"open_clip:<architecture>[@<pretrained tag>]"`` (its visual tower).
        embedding_size: output dimension of the linear head.
        in_channels: image channels (``small_cnn`` and timm).
        weights: a local weights file (see :func:`load_weights`); never downloaded.
        weights_cover: ``"backbone"`` when the file holds the feature extractor's weights (a foundation
            model's checkpoint), ``"all"`` when it holds the whole :class:`EmbeddingHead` (a model saved
            by this library).
        cache_pretrained: ask timm/open_clip for their pretrained weights, which works offline only when they
            are already in the library's local cache.
    """
    if embedding_size < 1:
        raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
    if weights_cover not in ("backbone", "all"):
        raise ValueError(f"weights_cover must be 'backbone' or 'all', got {weights_cover!r}")
    features, num_features = _build_features(name, in_channels, cache_pretrained)
    model = EmbeddingHead(features, num_features, embedding_size)
    if weights is not None:
        if weights_cover == "all":
            load_weights(model, weights)
        else:
            load_weights(model.backbone, weights)
    return model
