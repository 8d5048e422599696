"""Colour-space conversion in PyTorch: sRGB → CIE XYZ → CIE L*a*b* (D65 white, 2° observer).

BoxSnake (Yang et al., ICCV 2023) and BoxInst (Tian et al., CVPR 2021) measure the colour similarity of
neighbouring pixels in L*a*b*, where Euclidean distance roughly follows perceived colour difference. The
conversion follows the CIE definitions, with the same constants as scikit-image's ``rgb2lab`` (which the tests
compare against), and runs on any device and floating dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pairloss._validation import check_floating

__all__ = ["rgb_to_lab", "rgb_to_xyz"]

# Linear sRGB → XYZ (ITU-R BT.709 primaries, D65 white).
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
# The D65 reference white for the 2° standard observer.
_D65_WHITE = (0.95047, 1.0, 1.08883)


def _check_rgb(rgb: Tensor) -> Tensor:
    check_floating(rgb, "rgb")
    if rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must have shape [..., 3, H, W] (channels first), got {tuple(rgb.shape)}")
    return rgb


def rgb_to_xyz(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], shape ``[..., 3, H, W]`` → CIE XYZ (same shape).

    Each channel is linearised, c_lin = ((c + 0.055)/1.055)^2.4 for c > 0.04045 and c/12.92 otherwise, then
    mapped by the sRGB (D65) matrix: XYZ = M · c_lin.
    """
    rgb = _check_rgb(rgb)
    linear = torch.where(rgb > 0.04045, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = torch.tensor(_XYZ_FROM_RGB, dtype=rgb.dtype, device=rgb.device)
    return torch.einsum("ij,...jhw->...ihw", matrix, linear)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], shape ``[..., 3, H, W]`` → CIE L*a*b* (L in [0, 100]), D65 white, 2° observer.

    With t = XYZ / white and f(t) = t^(1/3) for t > (6/29)³, f(t) = t / (3 (6/29)²) + 4/29 otherwise:

        L* = 116 f(Y/Yn) − 16,   a* = 500 (f(X/Xn) − f(Y/Yn)),   b* = 200 (f(Y/Yn) − f(Z/Zn)).

    (CIE 15:2004; the constants 0.008856 and 7.787 are the rounded (6/29)³ and 1/(3 (6/29)²).)
    """
    xyz = rgb_to_xyz(rgb)
    white = torch.tensor(_D65_WHITE, dtype=xyz.dtype, device=xyz.device).view(3, 1, 1)
    t = xyz / white
    f = torch.where(t > 0.008856, t.clamp_min(0.008856) ** (1.0 / 3.0), 7.787 * t + 16.0 / 116.0)
    fx, fy, fz = f.unbind(dim=-3)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)
