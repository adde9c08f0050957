import pytest
import torch
from mmseg.registry import MODELS

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.models.necks import (select_random_tokens,
                                    select_uncertain_tokens)

T, F = True, False
# Uncertain (0.2 < s < 0.7): indices 1, 2, 4. 0.7 itself is not (strict).
SCORES = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.6, 0.7]])
NOISE = torch.tensor([[0.9, 0.1, 0.5, 0.8, 0.3, 0.2]])


@pytest.mark.parametrize(
    'k, expected',
    [
        # Fewer uncertain than k: all 3 uncertain + others by highest u
        # (0.9 at 0, then 0.8 at 3).
        (5, [T, T, T, T, T, F]),
        # Exactly k uncertain.
        (3, [F, T, T, F, T, F]),
        # More uncertain than k: the uncertain ones with highest u
        # (0.5 at 2, 0.3 at 4), never the certain 0 despite u = 0.9.
        (2, [F, F, T, F, T, F]),
        (0, [F] * 6),
    ])
def test_select_uncertain_tokens_by_hand(k, expected):
    mask = select_uncertain_tokens(SCORES, NOISE, 0.2, 0.7, k)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [expected]


def test_select_random_tokens_is_topk_of_noise():
    assert select_random_tokens(NOISE, 2).tolist() == [[T, F, F, T, F, F]]


def _neck(**kwargs):
    return MODELS.build(dict(type='UncertaintyMaskingNeck', **kwargs))


@pytest.mark.parametrize('ratio, rounding, k', [
    (0.4, 'ceil', 10),
    (0.3, 'ceil', 8),
    (0.3, 'floor', 7),
    (0.99, 'floor', 24),
    (0.99, 'ceil', 25),
])
def test_k_rounds_tokens_times_ratio(ratio, rounding, k):
    """k = ceil(25 r) (authors) or floor(25 r) (paper) on a 5x5 grid."""
    neck = _neck(mask_ratio=ratio, block_size=16,
                 num_masked_rounding=rounding)
    cams = torch.rand(3, 4, 80, 80)
    labels = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]])
    mask = neck(cams, labels, (5, 5))
    assert mask.shape == (3, 25) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [k] * 3


@pytest.mark.parametrize('block_score', ['nearest', 'area'])
@pytest.mark.parametrize(
    'labels, expected',
    [
        # Only class 0 counts: block 0 uncertain, then highest u (block 3).
        ([1, 0], [T, F, F, T]),
        # Only class 1: block 1 uncertain (block 2's 0.9 is certain).
        ([0, 1], [F, T, F, T]),
        # Both: max over classes makes blocks 0 and 1 uncertain.
        ([1, 1], [T, T, F, F]),
    ])
def test_absent_classes_are_ignored(labels, expected, block_score):
    neck = _neck(mask_ratio=0.5, block_size=16, block_score=block_score)
    cams = torch.tensor([[[[0.5, 0.0], [0.0, 0.0]], [[0.0, 0.5], [0.9, 0.0]]]])
    noise = torch.tensor([[0.1, 0.2, 0.3, 0.9]])
    mask = neck(cams, torch.tensor([labels]), (2, 2), noise=noise)
    assert mask.tolist() == [expected]


def _block_cams():
    """128x128 px CAM of 64-px blocks (2x2 grid of blocks).

    Top-left block: 0.5 at its top-left pixel, 0 elsewhere (area mean ~0);
    top-right: 1 at the top-left pixel, 0.5 on average over the block;
    bottom-left: certain foreground (1).
    """
    cams = torch.zeros(1, 1, 128, 128)
    cams[..., 0, 0] = 0.5
    cams[..., :64, 64:96] = 1.
    cams[..., 64:, :64] = 1.
    return cams


@pytest.mark.parametrize('block_score, uncertain', [('nearest', 0),
                                                    ('area', 1)])
def test_block_masking_masks_4x4_patch_blocks(block_score, uncertain):
    """'nearest' reads each block's top-left pixel, 'area' its mean."""
    neck = _neck(mask_ratio=0.5, block_size=64, block_score=block_score)
    # Blocks by noise, without the uncertain one: 2 (0.9), then 3 (0.2).
    noise = torch.tensor([[0.1, 0.0, 0.9, 0.2]])
    mask = neck(_block_cams(), torch.ones(1, 1), (8, 8), noise=noise)
    assert mask.shape == (1, 64)
    block_mask = torch.zeros(4, dtype=torch.bool)
    block_mask[[uncertain, 2]] = True
    expected = block_mask.view(2, 2).repeat_interleave(4, 0)
    expected = expected.repeat_interleave(4, 1)
    assert torch.equal(mask.view(8, 8), expected)


def test_random_warmup_and_random_strategy_ignore_cams():
    """The first int(T * 0.2) iterations mask by noise alone: the caller
    gives no CAM (uses_cam) and the neck ranks the noise."""
    noise = torch.tensor([[0.1, 0.0, 0.9, 0.2]])
    labels = torch.ones(1, 1)
    by_noise = torch.tensor([[F, F, T, T]])  # blocks 2, 3: highest u
    neck = _neck(mask_ratio=0.5, block_size=64, random_warmup_ratio=0.2)

    def blocks(mask):
        return mask.view(1, 2, 4, 2, 4)[:, :, 0, :, 0].reshape(1, 4)

    assert not neck.uses_cam(19, 100) and neck.uses_cam(20, 100)
    assert not neck.uses_cam(79, 401) and neck.uses_cam(80, 401)
    warm = neck(None, labels, (8, 8), noise=noise)
    assert torch.equal(blocks(warm), by_noise)
    late = neck(_block_cams(), labels, (8, 8), noise=noise)
    assert blocks(late).tolist() == [[T, F, T, F]]

    neck = _neck(mask_ratio=0.5, block_size=64, strategy='random')
    assert not neck.uses_cam(99, 100)


@pytest.mark.parametrize('kwargs, match', [
    (dict(mask_ratio=0.), 'mask_ratio'),
    (dict(mask_ratio=1.), 'mask_ratio'),
    (dict(uncertain_range=(0.7, 0.2)), 'out of order'),
    (dict(uncertain_range=(0.5, 0.5)), 'out of order'),
    (dict(uncertain_range=(-0.1, 0.5)), 'out of order'),
    (dict(uncertain_range=(0.2, 1.1)), 'out of order'),
    (dict(block_size=24), 'multiple of patch_size'),
    (dict(block_size=0), 'multiple of patch_size'),
    (dict(strategy='foo'), 'strategy'),
    (dict(block_score='max'), 'block_score'),
    (dict(num_masked_rounding='round'), 'num_masked_rounding'),
    (dict(random_warmup_ratio=1.5), 'random_warmup_ratio'),
])
def test_invalid_settings_raise_at_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _neck(**kwargs)


def test_invalid_inputs_raise():
    neck = _neck(block_size=64)
    cams, labels = torch.rand(2, 3, 16, 16), torch.ones(2, 3)
    with pytest.raises(ValueError, match='not divisible'):
        neck(cams, labels, (6, 8))
    with pytest.raises(ValueError, match='noise'):
        neck(cams, labels, (8, 8), noise=torch.rand(2, 5))
    with pytest.raises(ValueError, match='img_labels'):
        neck(cams, torch.ones(2, 4), (8, 8))
