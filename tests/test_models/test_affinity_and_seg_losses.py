"""Hand-checked tests of the PTC affinity loss and the bg/fg CE loss."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.models.losses.bg_fg_cross_entropy_loss import \
    BgFgCrossEntropyLoss
from mmseg_fsr.models.losses.patch_token_contrast_loss import \
    PatchTokenContrastLoss

R2 = math.sqrt(0.5)  # cos 45 deg


def _tokens():
    # 4 tokens in 2-D, laid out as (B=1, D=2, h=1, w=4); lengths differ on
    # purpose (cosines must not depend on them):
    # t0 = 3 * (1, 0), t1 = (1, 1), t2 = 0.5 * (0, 1), t3 = (-2, 0)
    # |cos|: c01 = R2, c02 = 0, c03 = 1, c12 = R2, c13 = R2, c23 = 0
    return torch.tensor([[[[3., 1., 0., -2.]], [[0., 1., .5, 0.]]]])


def test_ptc_hand_example():
    tokens = _tokens()
    labels = torch.tensor([[[1, 1, 2, 255]]])
    loss = PatchTokenContrastLoss(loss_weight=0.2)(tokens, labels)
    # t3 is ignored (its |cos| = 1 with t0 must not count); self-pairs
    # skipped. Ordered pairs: positive (0,1), (1,0) -> n_pos = 2, sum 2*R2;
    # negative (0,2), (2,0), (1,2), (2,1) -> n_neg = 4, sum 0+0+R2+R2.
    pos = 1 - 2 * R2 / (2 + 1)  # 0.528595
    neg = 2 * R2 / (4 + 1)  # 0.282843
    expected = 0.2 * 0.5 * (pos + neg)  # 0.081144
    assert abs(expected - 0.081144) < 1e-6
    assert loss.shape == ()
    assert torch.allclose(loss, torch.tensor(expected), atol=1e-6)


def test_ptc_pools_pairs_over_the_batch():
    tokens = _tokens().repeat(2, 1, 1, 1)
    labels = torch.tensor([[[1, 1, 2, 255]], [[1, 1, 1, 1]]])
    loss = PatchTokenContrastLoss(loss_weight=1.0)(tokens, labels)
    # image 1 adds all 12 ordered pairs as positives:
    # 2 * (c01 + c02 + c03 + c12 + c13 + c23) = 2 * (3 * R2 + 1)
    pos_sum = 2 * R2 + 2 * (3 * R2 + 1)
    pos = 1 - pos_sum / (2 + 12 + 1)
    neg = 2 * R2 / (4 + 1)
    assert torch.allclose(loss, torch.tensor(0.5 * (pos + neg)), atol=1e-6)


def test_ptc_gradient_skips_ignored_token():
    tokens = _tokens().requires_grad_()
    labels = torch.tensor([[[1, 1, 2, 255]]])
    PatchTokenContrastLoss()(tokens, labels).backward()
    grad = tokens.grad[0, :, 0]  # (D, N)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[:, 3], torch.zeros(2))
    assert grad[:, :3].abs().sum() > 0


def test_ptc_all_ignored_is_finite():
    loss = PatchTokenContrastLoss(loss_weight=0.2)(
        torch.randn(2, 4, 3, 3), torch.full((2, 3, 3), 255))
    # no pairs: 0.2 * 0.5 * ((1 - 0 / 1) + 0 / 1)
    assert torch.allclose(loss, torch.tensor(0.1))


def test_ptc_registered_and_name():
    loss = MODELS.build(dict(type='PatchTokenContrastLoss', loss_weight=0.3))
    assert isinstance(loss, PatchTokenContrastLoss)
    assert loss.loss_weight == 0.3
    assert loss.loss_name == 'loss_aff'


# ------------------------------------------------------------ bg / fg CE
def _ce(logits, y):
    """Independent cross-entropy: log(sum exp) - z_y."""
    return math.log(sum(math.exp(z) for z in logits)) - logits[y]


PIXELS = [  # (logits over 3 classes, label)
    ([2., 0., 0.], 0),  # CE = ln(e^2 + 2) - 2      = 0.239545
    ([0., 1., 0.], 0),  # CE = ln(e + 2)            = 1.551445
    ([0., 0., 3.], 2),  # CE = ln(2 + e^3) - 3      = 0.094923
    ([1., 2., 0.], 1),  # CE = ln(e + e^2 + 1) - 2  = 0.407606
    ([5., -1., 2.], 255),  # ignored
    ([0., 0., 0.], 0),  # CE = ln 3                 = 1.098612
]


def _as_tensors(pixels):
    logits = torch.tensor([p[0] for p in pixels]).t().reshape(1, 3, 1, -1)
    label = torch.tensor([[[p[1] for p in pixels]]])
    return logits, label


def test_bgfg_ce_hand_example():
    ces = {i: _ce(*p) for i, p in enumerate(PIXELS) if p[1] != 255}
    assert abs(ces[0] - 0.239545) < 1e-6 and abs(ces[5] - 1.098612) < 1e-6
    bg = (ces[0] + ces[1] + ces[5]) / 3  # 0.963201
    fg = (ces[2] + ces[3]) / 2  # 0.251264
    expected = 0.1 * (bg + fg) / 2  # 0.0607233
    assert abs(expected - 0.0607233) < 1e-6
    # differs from the plain mean over the 5 valid pixels (0.0678426)
    assert abs(expected - 0.1 * sum(ces.values()) / 5) > 1e-3
    logits, label = _as_tensors(PIXELS)
    loss = BgFgCrossEntropyLoss(loss_weight=0.1)(logits, label)
    assert loss.shape == ()
    assert torch.allclose(loss, torch.tensor(expected), atol=1e-6)


def test_bgfg_ce_only_background_is_half_bg_mean():
    # the authors' get_seg_loss: (bg + NaN) / 2, whose NaN half
    # back-propagates zeros; here the empty half adds 0 to the same mean
    pixels = [PIXELS[0], PIXELS[1], PIXELS[4]]
    logits, label = _as_tensors(pixels)
    loss = BgFgCrossEntropyLoss(loss_weight=1.0)(logits, label)
    expected = (_ce(*PIXELS[0]) + _ce(*PIXELS[1])) / 2 / 2
    assert not torch.isnan(loss)
    assert torch.allclose(loss, torch.tensor(expected), atol=1e-6)
    skipped = BgFgCrossEntropyLoss(loss_weight=1.0, skip_empty_group=True)
    assert torch.allclose(skipped(logits, label), torch.tensor(2 * expected),
                          atol=1e-6)


def test_bgfg_ce_only_foreground_is_half_fg_mean():
    pixels = [PIXELS[2], PIXELS[3]]
    logits, label = _as_tensors(pixels)
    loss = BgFgCrossEntropyLoss(loss_weight=1.0)(logits, label)
    expected = (_ce(*PIXELS[2]) + _ce(*PIXELS[3])) / 2 / 2
    assert torch.allclose(loss, torch.tensor(expected), atol=1e-6)
    skipped = BgFgCrossEntropyLoss(loss_weight=1.0, skip_empty_group=True)
    assert torch.allclose(skipped(logits, label), torch.tensor(2 * expected),
                          atol=1e-6)


def test_bgfg_ce_no_foreground_gradient_is_the_authors():
    # the authors' (bg + fg) / 2 is NaN on a batch without foreground
    # pixels, yet trains: the all-ignored fg half back-propagates zeros, so
    # the background half trains at weight 0.5
    pixels = [PIXELS[0], PIXELS[1], PIXELS[4]]
    logits, label = _as_tensors(pixels)
    logits.requires_grad_()
    bg = F.cross_entropy(logits, label, ignore_index=255)
    fg = F.cross_entropy(logits, torch.full_like(label, 255),
                         ignore_index=255)
    authors = (bg + fg) * 0.5
    assert torch.isnan(authors)
    authors.backward()
    expected = logits.grad.clone()
    assert not torch.isnan(expected).any() and expected.abs().sum() > 0
    logits.grad = None
    BgFgCrossEntropyLoss(loss_weight=1.0)(logits, label).backward()
    assert torch.allclose(logits.grad, expected, atol=1e-7)
    # pixel 0 by hand: 0.5 * (softmax - onehot) / 2 background pixels
    p = torch.tensor([2., 0., 0.]).softmax(0)
    assert torch.allclose(logits.grad[0, :, 0, 0],
                          0.25 * (p - torch.tensor([1., 0, 0])), atol=1e-6)


def test_bgfg_ce_custom_ignore_index():
    logits, label = _as_tensors(PIXELS)
    label[label == 255] = 7
    label[0, 0, 1] = 7  # now also ignore pixel 1
    loss = BgFgCrossEntropyLoss(loss_weight=1.0)(logits, label,
                                                 ignore_index=7)
    bg = (_ce(*PIXELS[0]) + _ce(*PIXELS[5])) / 2
    fg = (_ce(*PIXELS[2]) + _ce(*PIXELS[3])) / 2
    assert torch.allclose(loss, torch.tensor((bg + fg) / 2), atol=1e-6)


def test_bgfg_ce_all_ignored_is_zero_with_graph():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = BgFgCrossEntropyLoss()(logits, torch.full((2, 4, 4), 255))
    assert loss.item() == 0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_bgfg_ce_gradient():
    logits, label = _as_tensors(PIXELS)
    logits.requires_grad_()
    BgFgCrossEntropyLoss(loss_weight=1.0)(logits, label).backward()
    grad = logits.grad[0, :, 0]  # (3 classes, 6 pixels)
    # pixel 4 is ignored
    assert torch.equal(grad[:, 4], torch.zeros(3))
    # d/dz of 0.5 * CE_0 / 3 for pixel 0 = 0.5 / 3 * (softmax - onehot)
    p = torch.tensor([2., 0., 0.]).softmax(0)
    assert torch.allclose(grad[:, 0], 0.5 / 3 * (p - torch.tensor([1., 0, 0])),
                          atol=1e-6)


def test_bgfg_ce_rejects_weight():
    logits, label = _as_tensors(PIXELS)
    with pytest.raises(ValueError):
        BgFgCrossEntropyLoss()(logits, label, weight=torch.ones(1, 1, 6))


def test_bgfg_ce_registered_and_name():
    loss = MODELS.build(dict(type='BgFgCrossEntropyLoss', loss_weight=0.1))
    assert isinstance(loss, BgFgCrossEntropyLoss)
    assert loss.loss_name == 'loss_seg'
