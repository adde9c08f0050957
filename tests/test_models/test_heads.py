"""Tests of ``CAMHead``, ``LargeFOVHead`` and ``WSSSDataPreProcessor``."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.models.data_preprocessor import WSSSDataPreProcessor


# ------------------------------------------------------------------ CAMHead
def _cam_head(**kwargs):
    head = MODELS.build(
        dict(
            type='CAMHead',
            in_channels=3,
            num_classes=2,
            aux_in_channels=2,
            **kwargs))
    with torch.no_grad():
        head.classifier.weight.copy_(
            torch.tensor([[1., 0., -1.], [0., 2., 0.]]).view(2, 3, 1, 1))
        head.aux_classifier.weight.copy_(
            torch.tensor([[0., 1.], [-1., 0.]]).view(2, 2, 1, 1))
    return head


# final tokens (1, 3, 2, 2); channel maxima (4, 5, 6)
FEAT = torch.tensor([[
    [[1., 4.], [0., 2.]],
    [[3., 0.], [5., 1.]],
    [[2., 6.], [1., 0.]],
]])
# auxiliary tokens (1, 2, 2, 2); channel maxima (3, -1)
AUX = torch.tensor([[
    [[3., 0.], [-2., 1.]],
    [[-1., -4.], [-3., -2.]],
]])


def test_cam_head_no_bias():
    head = _cam_head()
    assert head.classifier.bias is None
    assert head.aux_classifier.bias is None
    assert head.classifier.kernel_size == (1, 1)
    assert head.aux_classifier.in_channels == 2
    assert MODELS.build(
        dict(type='CAMHead', in_channels=5,
             num_classes=4)).aux_classifier.in_channels == 5


def test_cam_head_logits_are_w_times_gmp():
    head = _cam_head()
    logits, aux_logits = head(FEAT, AUX)
    # W . GMP: (1*4 + 0*5 - 1*6, 2*5) = (-2, 10); pooling the per-pixel
    # scores instead would give (max(-1, -2, -1, 2), 10) = (2, 10).
    assert torch.allclose(logits, torch.tensor([[-2., 10.]]))
    # aux: (0*3 + 1*(-1), -1*3) = (-1, -3)
    assert torch.allclose(aux_logits, torch.tensor([[-1., -3.]]))


def test_cam_head_cams_are_relu_of_1x1_conv():
    head = _cam_head()
    cams, aux_cams = head.cams(FEAT, AUX)
    # class 0: relu(ch0 - ch2) ; class 1: relu(2 * ch1)
    expected = torch.tensor([[
        [[0., 0.], [0., 2.]],
        [[6., 0.], [10., 2.]],
    ]])
    assert torch.allclose(cams, expected)
    # aux class 0: relu(ch1) ; class 1: relu(-ch0)
    assert torch.allclose(
        aux_cams, torch.stack([AUX[0, 1], -AUX[0, 0]]).relu()[None])


def _soft_margin(logits, target):
    """-mean_c[y log sig(x) + (1 - y) log(1 - sig(x))] by hand."""
    def log_sig(x):
        return -math.log1p(math.exp(-x))
    terms = [
        y * log_sig(x) + (1 - y) * log_sig(-x)
        for x, y in zip(logits, target)
    ]
    return -sum(terms) / len(terms)


def test_cam_head_loss_is_multilabel_soft_margin():
    head = _cam_head(loss_weight=1.0, aux_loss_weight=0.5)
    labels = torch.tensor([[1., 0.]])
    losses = head.loss(FEAT, AUX, labels)
    assert set(losses) == {'loss_cls', 'loss_cls_aux'}
    # logits (-2, 10), target (1, 0): (ln(1 + e^2) + ln(1 + e^10)) / 2
    expected = _soft_margin([-2., 10.], [1., 0.])
    assert abs(expected - 6.063487) < 1e-6
    assert torch.allclose(losses['loss_cls'], torch.tensor(expected))
    expected_aux = 0.5 * _soft_margin([-1., -3.], [1., 0.])
    assert torch.allclose(losses['loss_cls_aux'], torch.tensor(expected_aux))


def test_cam_head_loss_batch_mean_and_gradient():
    head = _cam_head()
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 4, 4)
    labels = torch.tensor([[1., 1.], [0., 1.]])
    losses = head.loss(feat, feat[:, :2], labels)
    logits = torch.einsum('kc,bc->bk', head.classifier.weight.view(2, 3),
                          feat.amax(dim=(2, 3)))
    expected = sum(
        _soft_margin(logits[i].tolist(), labels[i].tolist())
        for i in range(2)) / 2
    assert torch.allclose(losses['loss_cls'], torch.tensor(expected),
                          atol=1e-6)
    sum(losses.values()).backward()
    assert head.classifier.weight.grad.abs().sum() > 0
    assert head.aux_classifier.weight.grad.abs().sum() > 0


# ------------------------------------------------------------- LargeFOVHead
def _fov_head(**kwargs):
    cfg = dict(
        type='LargeFOVHead',
        in_channels=4,
        channels=6,
        num_classes=3,
        dropout_ratio=0.0,
        align_corners=False,
        loss_decode=dict(type='BgFgCrossEntropyLoss', loss_weight=0.1))
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def test_largefov_structure():
    head = _fov_head()
    assert len(head.convs) == 2
    for i, conv_module in enumerate(head.convs):
        conv = conv_module.conv
        assert conv.bias is None
        assert conv.kernel_size == (3, 3)
        assert conv.dilation == (5, 5)
        assert conv.padding == (5, 5)
        assert conv.in_channels == (4 if i == 0 else 6)
        assert conv.out_channels == 6
    assert head.conv_seg.kernel_size == (1, 1)
    assert head.conv_seg.out_channels == 3
    head3 = _fov_head(num_convs=3, dilation=2)
    assert len(head3.convs) == 3 and head3.convs[2].conv.dilation == (2, 2)


def test_largefov_forward_shape_and_in_index():
    head = _fov_head()
    torch.manual_seed(0)
    feats = (torch.randn(2, 7, 5, 5), torch.randn(2, 4, 7, 9))
    out = head(feats)  # in_index=-1 picks the last map
    assert out.shape == (2, 3, 7, 9)
    # hand pipeline: conv -> ReLU twice, then 1x1 conv with bias
    x = feats[-1]
    for cm in head.convs:
        x = F.conv2d(x, cm.conv.weight, padding=5, dilation=5).relu()
    x = F.conv2d(x, head.conv_seg.weight, head.conv_seg.bias)
    assert torch.allclose(out, x, atol=1e-6)


def test_largefov_decode_head_loss_with_data_samples():
    head = _fov_head()
    torch.manual_seed(0)
    feats = (torch.randn(2, 4, 4, 4), )
    gts = torch.tensor([[0] * 8, [1] * 8]).repeat(8, 1).view(2, 8, 8)
    gts[1, :2] = 255
    gts[1, 2:4] = 0
    samples = [
        SegDataSample(
            gt_sem_seg=PixelData(data=gts[i][None]),
            metainfo=dict(img_shape=(8, 8), pad_shape=(8, 8)))
        for i in range(2)
    ]
    losses = head.loss(feats, samples, train_cfg=dict())
    assert set(losses) == {'loss_seg', 'acc_seg'}
    # hand: upsample logits to the label size, CE per pixel, bg/fg means
    logits = F.interpolate(
        head(feats), size=(8, 8), mode='bilinear', align_corners=False)
    logp = logits.log_softmax(1)
    valid = gts != 255
    nll = -logp.gather(1, gts.clamp(max=2)[:, None])[:, 0]
    bg = nll[valid & (gts == 0)].mean()
    fg = nll[valid & (gts != 0)].mean()
    assert torch.allclose(losses['loss_seg'], 0.1 * (bg + fg) / 2, atol=1e-6)
    losses['loss_seg'].backward()
    assert head.convs[0].conv.weight.grad.abs().sum() > 0


# ---------------------------------------------------- WSSSDataPreProcessor
PRE_CFG = dict(
    mean=[10., 20., 30.],
    std=[2., 4., 5.],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)


def _multi_view_batch(shapes):
    """A batch as PackWSSSInputs packs it: each sample's (V, 3, H, W) views
    as one (3V, H, W) tensor with the num_views meta."""
    g = torch.Generator().manual_seed(0)
    inputs = [
        torch.randint(0, 256, s, generator=g, dtype=torch.uint8).flatten(0, 1)
        for s in shapes
    ]
    samples = [
        SegDataSample(metainfo=dict(img_path=f'{i}.jpg', num_views=s[0]))
        for i, s in enumerate(shapes)
    ]
    return dict(inputs=inputs, data_samples=samples)


def test_wsss_preprocessor_multi_view():
    pre = WSSSDataPreProcessor(**PRE_CFG)
    data = _multi_view_batch([(2, 3, 6, 5)] * 3)
    # sample 0, view 1, pixel (2, 4) as B, G, R
    data['inputs'][0][3:6, 2, 4] = torch.tensor([100, 50, 7],
                                                dtype=torch.uint8)
    raw = [x.unflatten(0, (2, 3)) for x in data['inputs']]
    out = pre(copy.deepcopy(data), training=True)
    x = out['inputs']
    assert x.shape == (3, 2, 3, 6, 5)
    assert x.dtype == torch.float32
    # RGB = (7, 50, 100) -> ((7-10)/2, (50-20)/4, (100-30)/5)
    assert torch.allclose(x[0, 1, :, 2, 4], torch.tensor([-1.5, 7.5, 14.]))
    # whole batch against the explicit formula
    mean = torch.tensor([10., 20., 30.]).view(3, 1, 1)
    std = torch.tensor([2., 4., 5.]).view(3, 1, 1)
    for b in range(3):
        for v in range(2):
            rgb = raw[b][v].flip(0).float()
            assert torch.allclose(x[b, v], (rgb - mean) / std)
    assert [s.img_path for s in out['data_samples']] == ['0.jpg', '1.jpg',
                                                         '2.jpg']
    # same in eval mode (no padding for multi-view batches)
    assert torch.allclose(pre(copy.deepcopy(data), training=False)['inputs'],
                          x)


def test_wsss_preprocessor_multi_view_no_conversion():
    pre = WSSSDataPreProcessor(mean=[0., 0., 0.], std=[1., 1., 1.])
    data = _multi_view_batch([(2, 3, 4, 4)] * 2)
    out = pre(copy.deepcopy(data), training=True)
    expected = torch.stack(data['inputs']).float().unflatten(1, (2, 3))
    assert torch.equal(out['inputs'], expected)


@pytest.mark.parametrize('shapes', [
    [(2, 3, 8, 8), (2, 3, 8, 6)],
    [(2, 3, 8, 8), (3, 3, 8, 8)],
])
def test_wsss_preprocessor_mismatched_views_raise(shapes):
    pre = WSSSDataPreProcessor(**PRE_CFG)
    with pytest.raises(ValueError):
        pre(_multi_view_batch(shapes), training=True)


def _single_view_batch(sizes):
    g = torch.Generator().manual_seed(1)
    inputs, samples = [], []
    for h, w in sizes:
        inputs.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        gt = torch.randint(0, 4, (1, h, w), generator=g)
        samples.append(
            SegDataSample(
                gt_sem_seg=PixelData(data=gt),
                metainfo=dict(img_shape=(h, w), ori_shape=(h, w))))
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('training', [True, False])
def test_wsss_preprocessor_single_view_matches_mmseg(training):
    """Stock batches: mmseg's pre-processing; in training, plus a second
    view and image labels read off the masks (classes 1-3 of 4)."""
    cfg = dict(PRE_CFG, size=(8, 8), test_cfg=dict(size_divisor=4))
    sizes = [(7, 6), (8, 5)] if training else [(7, 6), (7, 6)]
    data = _single_view_batch(sizes)
    ours = WSSSDataPreProcessor(num_classes=4, **cfg)(
        copy.deepcopy(data), training)
    ref = SegDataPreProcessor(**cfg)(copy.deepcopy(data), training)
    if training:
        assert ours['inputs'].shape == (2, 2, 3, 8, 8)
        assert torch.equal(ours['inputs'][:, 0], ref['inputs'])
        assert not torch.equal(ours['inputs'][:, 1], ref['inputs'])
        for sample in ours['data_samples']:
            present = sample.gt_sem_seg.data.unique()
            expected = [c - 1 for c in present.tolist() if 0 < c < 255]
            assert sample.gt_class_labels.nonzero()[:, 0].tolist() == expected
    else:
        assert ours['inputs'].shape == (2, 3, 8, 8)  # padded to divisor
        assert torch.equal(ours['inputs'], ref['inputs'])
    for a, b in zip(ours['data_samples'], ref['data_samples']):
        assert a.metainfo == b.metainfo
        assert torch.equal(a.gt_sem_seg.data, b.gt_sem_seg.data)
    if training:  # padded with seg_pad_val
        assert (ours['data_samples'][0].gt_sem_seg.data[:, 7] == 255).all()


def test_wsss_preprocessor_needs_the_class_count_for_stock_batches():
    with pytest.raises(ValueError, match='needs num_classes'):
        WSSSDataPreProcessor(**dict(PRE_CFG, size=(8, 8)))(
            _single_view_batch([(8, 8)]), True)
