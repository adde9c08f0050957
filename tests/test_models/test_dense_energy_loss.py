"""The permutohedral bilateral filter against brute force on tiny images.

How the rloss lattice differs from the exact Gaussian (measured on these
16x16 images): its output is about c times the exact unnormalised sum,
c = 0.47-0.54 depending on the image and sigma_xy (the barycentric splat
and slice smear each point over a simplex, lowering the peak), with a
relative L2 error of 0.09-0.10 after the best constant; it is not exactly
symmetric either (||W - W^T|| / ||W|| = 0.11-0.15). The bounds below add
margin to these.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg_fsr.models.utils.permutohedral import (PermutohedralLattice,
                                                  bilateral_filter)

# Bounds with margin over the measured ranges in the module docstring.
SCALE_RANGE = (0.4, 0.65)
MAX_FILTER_ERROR = 0.15


def _images(seed: int, batch: int, height: int, width: int) -> Tensor:
    """RGB images in [0, 255]: 4x4 colour blocks plus noise."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(batch, 3, 4, 4, generator=g) * 255
    images = F.interpolate(blocks, size=(height, width))
    noise = torch.randn(batch, 3, height, width, generator=g) * 10
    return (images + noise).clamp(0, 255)


def _gaussian_kernel(images: Tensor, sigma_rgb: float,
                     sigma_xy: float) -> Tensor:
    """Exact kernel W[b, p, q] = exp(-|f_p - f_q|^2 / 2), float64."""
    batch, _, height, width = images.shape
    rows, cols = torch.meshgrid(
        torch.arange(height), torch.arange(width), indexing='ij')
    xy = torch.stack([cols, rows]).double().expand(batch, 2, height, width)
    features = torch.cat(
        [xy / sigma_xy, images.double() / sigma_rgb], 1).flatten(2)
    features = features.transpose(1, 2)
    return torch.exp(-0.5 * torch.cdist(features, features)**2)


def _apply(kernel: Tensor, values: Tensor) -> Tensor:
    """Dense filtering: (B, n, n) kernel, (B, C, h, w) values."""
    return (values.flatten(2).double() @ kernel.transpose(1, 2)).view(
        values.shape)


def _scaled_error(approx: Tensor, exact: Tensor):
    """Best constant c (least squares) and the relative L2 error after."""
    approx, exact = approx.double(), exact.double()
    scale = (approx * exact).sum() / (exact * exact).sum()
    return scale.item(), ((approx / scale - exact).norm() /
                          exact.norm()).item()


def test_lattice_lone_point_self_weight():
    # A lone point at the origin: all its splat weight lands on one vertex;
    # the blur returns 1 of it plus 0.5**(d+1) from the one walk round the
    # simplex the blur axes allow (the other walk needs absent vertices),
    # and alpha = 1 / (1 + 2**-d) rescales: 65 / 66 for d = 5. In a dense
    # lattice both walks exist and the self-weight is exp(0) = 1.
    lattice = PermutohedralLattice(torch.zeros(1, 1, 5))
    values = torch.tensor([[[2.0, -3.0]]])
    assert torch.allclose(
        lattice.filter(values), values * 65 / 66, rtol=1e-6)


def test_lattice_keeps_images_apart_and_is_linear():
    images = _images(0, 3, 8, 8)
    values = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    batched = bilateral_filter(images, values, 15., 5.)
    one_by_one = torch.cat([
        bilateral_filter(images[i:i + 1], values[i:i + 1], 15., 5.)
        for i in range(3)
    ])
    assert torch.allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)
    combined = bilateral_filter(images, values[:, :1] - 2 * values[:, 1:],
                                15., 5.)
    assert torch.allclose(
        combined, batched[:, :1] - 2 * batched[:, 1:], rtol=1e-4, atol=1e-4)


def test_lattice_pins_rloss_numerics_on_exact_ties():
    """Values printed by rloss's own bilateralfilter_batch on these inputs.

    Integer colours and positions put points exactly on simplex faces,
    where the rank tie-breaking, and every last bit of the elevated
    coordinates, decide which lattice points exist: getting either
    slightly wrong moves these values by 0.01-0.5.
    """
    images = torch.zeros(1, 3, 5, 5)
    images[..., 2:] = 60.
    values = torch.stack([
        torch.ones(5, 5),
        torch.arange(25.).view(5, 5) / 10,
    ])[None]
    out = bilateral_filter(images, values, 15., 2.)
    expected_row = torch.tensor([4.114100, 4.428762, 5.917263, 6.442040,
                                 5.521115])
    assert torch.allclose(out[0, 1, 2], expected_row, atol=1e-5)
    assert torch.allclose(
        out.sum((2, 3)), torch.tensor([[98.592293, 115.283691]]), rtol=1e-6)

    images = _images(0, 1, 16, 16).round()
    for sigma_xy, expected_sum, expected_sum_sq in [(1., 191.460968,
                                                     155.302094),
                                                    (2., 452.397583,
                                                     895.200195)]:
        out = bilateral_filter(images, torch.ones(1, 1, 16, 16), 15.,
                               sigma_xy)
        assert abs(out.sum().item() - expected_sum) < 1e-4
        assert abs((out**2).sum().item() - expected_sum_sq) < 1e-4


@pytest.mark.parametrize('seed,sigma_xy', [(0, 5.), (1, 5.), (2, 50.)])
def test_lattice_against_brute_force_gaussian(seed, sigma_xy):
    """Lattice = c * exact Gaussian sum, c in (0.4, 0.65), error < 0.15.

    Relative L2 error over all outputs after the best constant c.
    """
    images = _images(seed, 2, 16, 16)
    values = torch.rand(
        2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    approx = bilateral_filter(images, values, 15., sigma_xy)
    exact = _apply(_gaussian_kernel(images, 15., sigma_xy), values)
    scale, error = _scaled_error(approx, exact)
    assert SCALE_RANGE[0] < scale < SCALE_RANGE[1]
    assert error < MAX_FILTER_ERROR
