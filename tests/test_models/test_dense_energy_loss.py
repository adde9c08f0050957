"""The permutohedral bilateral filter and the FSR dense energy loss.

References are brute force on tiny images: the exact Gaussian kernel as a
dense (n, n) matrix, and the lattice's own kernel made dense by filtering
the identity (the filter is linear), plugged into an independent
transcription of the authors' formula (their ``get_energy_loss`` ->
``DenseEnergyLoss`` -> ``DenseEnergyLossFunction``).

How the rloss lattice differs from the exact Gaussian (measured on these
16x16 images): its output is about c times the exact unnormalised sum,
c = 0.47-0.54 depending on the image and sigma_xy (the barycentric splat
and slice smear each point over a simplex, lowering the peak), with a
relative L2 error of 0.09-0.10 after the best constant; it is not exactly
symmetric either (||W - W^T|| / ||W|| = 0.11-0.15). So the loss is
0.515-0.53 times the exact-Gaussian one and its gradient is off by
0.10-0.15 after the constant. The bounds below add margin to these.
"""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.models.losses.dense_energy_loss import DenseEnergyLoss
from mmseg_fsr.models.utils.permutohedral import (PermutohedralLattice,
                                                  bilateral_filter)

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
# Bounds with margin over the measured ranges in the module docstring.
SCALE_RANGE = (0.4, 0.65)
MAX_FILTER_ERROR = 0.15
MAX_GRAD_ERROR = 0.25


def _images(seed: int, batch: int, height: int, width: int) -> Tensor:
    """RGB images in [0, 255]: 4x4 colour blocks plus noise."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(batch, 3, 4, 4, generator=g) * 255
    images = F.interpolate(blocks, size=(height, width))
    noise = torch.randn(batch, 3, height, width, generator=g) * 10
    return (images + noise).clamp(0, 255)


def _normalise(images: Tensor) -> Tensor:
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
        STD).view(1, 3, 1, 1)


def _inputs(seed: int, batch: int = 2, classes: int = 4, size: int = 16):
    """Normalised images, logits and labels with about 30% unlabelled."""
    g = torch.Generator().manual_seed(seed)
    images = _normalise(_images(seed, batch, size, size))
    logits = F.interpolate(
        torch.randn(batch, classes, size // 4, size // 4, generator=g) * 3,
        size=(size, size),
        mode='bilinear',
        align_corners=False)
    labels = logits.argmax(1)
    labels[torch.rand(batch, size, size, generator=g) < 0.3] = 255
    return images, logits, labels


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


def _lattice_kernel(images: Tensor, sigma_rgb: float,
                    sigma_xy: float) -> Tensor:
    """The lattice filter as a dense W[b, p, q] (response at p to q)."""
    batch, _, height, width = images.shape
    n = height * width
    impulses = torch.eye(n).view(1, n, height, width).expand(batch, -1, -1,
                                                             -1)
    out = bilateral_filter(images, impulses, sigma_rgb, sigma_xy)
    return out.flatten(2).transpose(1, 2).double()


def _apply(kernel: Tensor, values: Tensor) -> Tensor:
    """Dense filtering: (B, n, n) kernel, (B, C, h, w) values."""
    return (values.flatten(2).double() @ kernel.transpose(1, 2)).view(
        values.shape)


def _authors_loss(inputs, logits, labels, kernel_fn, exact=False,
                  sigma_rgb=15., sigma_xy=100., scale=0.5):
    """Transcription of the authors' energy with a dense kernel.

    Their steps, their interpolation calls and their Gate assignments;
    with ``exact=False`` their backward (``-2 * AS / N * ROI`` w.r.t. the
    downscaled probabilities), else autograd through everything.
    """
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    img = inputs * std + mean
    prob = F.softmax(logits, dim=1)
    roi = torch.ones_like(prob[:, 0])
    label = labels.type(torch.uint8).unsqueeze(1)
    img_s = F.interpolate(img, scale_factor=scale,
                          recompute_scale_factor=True)
    seg_s = F.interpolate(prob, scale_factor=scale, mode='bilinear',
                          align_corners=False, recompute_scale_factor=True)
    roi_s = F.interpolate(roi.unsqueeze(1), scale_factor=scale,
                          recompute_scale_factor=True).squeeze(1)
    label_s = F.interpolate(label, scale_factor=scale, mode='nearest',
                            recompute_scale_factor=True)
    unlabelled = (label_s.long() == 255).squeeze(1)
    gate = roi_s.clone() - torch.max(seg_s, dim=1)[0]
    gate[unlabelled] = 1
    gate[gate < 0] = 0
    if not exact:
        gate = gate.detach()
    num = seg_s.shape[0]
    masked = (seg_s * roi_s.unsqueeze(1)).double()
    kernel = kernel_fn(img_s, sigma_rgb, sigma_xy * scale)
    filtered = _apply(kernel, masked if exact else masked.detach())
    gated = filtered * gate.unsqueeze(1)
    energy = -(masked * gated).sum() / num
    if not exact:
        grad = (-2 * gated / num * roi_s.unsqueeze(1)).detach()
        surrogate = (grad * seg_s).sum()
        energy = energy.detach() + surrogate - surrogate.detach()
    return 0.05 * 1e-7 * energy


def _our_loss(inputs, logits, labels, **kwargs):
    return DenseEnergyLoss(**kwargs)(inputs, logits, labels, MEAN, STD)


def _grad(loss_fn, inputs, logits, labels, *args, **kwargs):
    """Loss value and its gradient w.r.t. the logits, in float64."""
    logits = logits.clone().requires_grad_()
    loss = loss_fn(inputs, logits, labels, *args, **kwargs)
    loss.backward()
    return loss.detach().double(), logits.grad.double()


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


def test_loss_and_authors_gradient_match_their_formula():
    inputs, logits, labels = _inputs(0)
    loss, grad = _grad(_our_loss, inputs, logits, labels)
    ref_loss, ref_grad = _grad(_authors_loss, inputs, logits, labels,
                               _lattice_kernel)
    assert loss.shape == ()
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert torch.allclose(grad, ref_grad, rtol=1e-4,
                          atol=1e-5 * ref_grad.abs().max())


def test_exact_gradient_matches_autograd_of_their_energy():
    inputs, logits, labels = _inputs(1)
    loss, grad = _grad(_our_loss, inputs, logits, labels, exact_gradient=True)
    ref_loss, ref_grad = _grad(_authors_loss, inputs, logits, labels,
                               _lattice_kernel, exact=True)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert torch.allclose(grad, ref_grad, rtol=1e-4,
                          atol=1e-5 * ref_grad.abs().max())
    # With a varying Gate the authors' gradient is a different vector.
    _, authors_grad = _grad(_our_loss, inputs, logits, labels)
    assert (authors_grad - grad).norm() > 0.1 * grad.norm()


def test_loss_against_brute_force_gaussian():
    inputs, logits, labels = _inputs(2)
    loss, grad = _grad(_our_loss, inputs, logits, labels)
    ref_loss, ref_grad = _grad(_authors_loss, inputs, logits, labels,
                               _gaussian_kernel)
    assert SCALE_RANGE[0] < (loss / ref_loss).item() < SCALE_RANGE[1]
    scale, error = _scaled_error(grad, ref_grad)
    assert SCALE_RANGE[0] < scale < SCALE_RANGE[1]
    assert error < MAX_GRAD_ERROR


def test_gradient_with_constant_gate_is_the_energy_gradient():
    """All pixels unlabelled, so Gate = 1 and ROI = 1 everywhere.

    Then the authors' backward is the true gradient of the energy for a
    symmetric kernel: checked exactly on the brute-force Gaussian
    reference, and for the loss up to the lattice's c and error.
    """
    inputs, logits, labels = _inputs(3)
    labels = torch.full_like(labels, 255)
    _, authors_ref = _grad(_authors_loss, inputs, logits, labels,
                           _gaussian_kernel)
    _, autograd_ref = _grad(_authors_loss, inputs, logits, labels,
                            _gaussian_kernel, exact=True)
    assert torch.allclose(authors_ref, autograd_ref, rtol=1e-6,
                          atol=1e-9 * autograd_ref.abs().max())
    _, grad = _grad(_our_loss, inputs, logits, labels)
    scale, error = _scaled_error(grad, autograd_ref)
    assert SCALE_RANGE[0] < scale < SCALE_RANGE[1]
    assert error < MAX_GRAD_ERROR


def test_segmentation_along_colour_edges_has_lower_energy():
    images = torch.zeros(1, 3, 32, 32)
    images[:, 0, :, :16] = 220  # red left half
    images[:, 2, :, 16:] = 220  # blue right half
    inputs = _normalise(images)
    along = torch.zeros(1, 2, 32, 32)
    along[:, 0, :, :16] = along[:, 1, :, 16:] = 10
    across = torch.zeros(1, 2, 32, 32)
    across[:, 0, :16] = across[:, 1, 16:] = 10
    labels = torch.full((1, 32, 32), 255)
    loss_fn = DenseEnergyLoss()
    assert (loss_fn(inputs, along, labels, MEAN, STD) <
            0.9 * loss_fn(inputs, across, labels, MEAN, STD))


def test_build_shapes_and_roi():
    loss_fn = MODELS.build(dict(type='DenseEnergyLoss'))
    assert isinstance(loss_fn, DenseEnergyLoss)
    assert loss_fn.loss_name == 'loss_reg'
    inputs = _normalise(_images(4, 2, 17, 23))
    logits = torch.randn(2, 5, 17, 23, requires_grad=True)
    labels = torch.randint(0, 5, (2, 17, 23))
    labels[:, ::2] = 255  # Gate = 1 there, outside the ROI too
    roi = torch.ones(2, 17, 23)
    roi[..., :8] = 0
    loss = loss_fn(inputs, logits, labels, torch.tensor(MEAN).view(3, 1, 1),
                   torch.tensor(STD).view(3, 1, 1), roi=roi)
    assert loss.shape == () and loss.dtype == torch.float32
    loss.backward()
    # Bilinear downscaling reads input columns 2j and 2j+1 for output j, so
    # ROI columns < 4 (at half size) shield logit columns < 8 exactly.
    assert logits.grad[..., :8].abs().max() == 0
    assert logits.grad[..., 8:].abs().max() > 0
    changed = logits.detach().clone()
    changed[..., :8] = torch.randn(2, 5, 17, 8)
    assert torch.allclose(
        loss_fn(inputs, changed, labels, MEAN, STD, roi=roi), loss.detach())


def test_fp32_under_bf16_autocast_and_gradient_reaches_logits():
    inputs, logits, labels = _inputs(5)
    reference = _our_loss(inputs, logits, labels)
    logits = logits.bfloat16().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = _our_loss(inputs.bfloat16(), logits, labels)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, reference, rtol=0.05)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() > 0


def test_empty_batch():
    logits = torch.zeros(0, 3, 8, 8, requires_grad=True)
    loss = _our_loss(torch.zeros(0, 3, 8, 8), logits,
                     torch.zeros(0, 8, 8, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == logits.shape
