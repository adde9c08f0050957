"""Hand-checked tests of the CAM helpers in ``mmseg_fsr.models.utils.cam``."""
import torch

from mmseg_fsr.models.utils.cam import (cams_to_labels, cams_to_pseudo_labels,
                                        flip_fused_cam, min_max_normalize)

IGN = 255


def test_min_max_normalize_per_channel_and_image():
    cams = torch.tensor([
        # image 0: channel 0 spans [1, 9], channel 1 is all zero
        [[[1., 3.], [5., 9.]], [[0., 0.], [0., 0.]]],
        # image 1: channel 0 spans [2, 4], channel 1 is constant 7
        [[[2., 4.], [3., 2.]], [[7., 7.], [7., 7.]]],
    ])
    out = min_max_normalize(cams)
    expected = torch.tensor([
        [[[0., 0.25], [0.5, 1.]], [[0., 0.], [0., 0.]]],
        [[[0., 1.], [0.5, 0.]], [[0., 0.], [0., 0.]]],
    ])
    assert out.shape == (2, 2, 2, 2)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # eps = 1e-5 in the denominator: 8 / (8 + 1e-5) differs from 1 by ~1e-6
    assert torch.allclose(out, expected, atol=1e-5)


def test_min_max_normalize_all_zero_is_zero_not_nan():
    out = min_max_normalize(torch.zeros(1, 3, 4, 4))
    assert not torch.isnan(out).any()
    assert torch.equal(out, torch.zeros(1, 3, 4, 4))


def test_min_max_normalize_half_input_returns_fp32():
    cams = torch.tensor([[[[0., 2.], [1., 4.]]]], dtype=torch.float16)
    out = min_max_normalize(cams)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[[[0., .5], [.25, 1.]]]]),
                          atol=1e-5)


def _three_class_cams():
    # (1, 3, 2, 3): class 1 is NOT in the image but has the highest score
    # everywhere; it must never win.
    c0 = [[0.90, 0.50, 0.25], [0.10, 0.75, 0.30]]
    c1 = [[1.00, 1.00, 1.00], [1.00, 1.00, 1.00]]
    c2 = [[0.20, 0.60, 0.10], [0.80, 0.25, 0.10]]
    cams = torch.tensor([[c0, c1, c2]])
    img_labels = torch.tensor([[1., 0., 1.]])
    return cams, img_labels


def test_cams_to_pseudo_labels_thresholds_and_absent_class():
    cams, img_labels = _three_class_cams()
    labels = cams_to_pseudo_labels(
        cams, img_labels, high_thr=0.75, low_thr=0.25, ignore_index=IGN)
    # pixel: best present score -> label
    # (0,0) c0 .90 > .75           -> 1
    # (0,1) c2 .60 in (.25, .75]   -> 255
    # (0,2) c0 .25 == low (<= low) -> 0
    # (1,0) c2 .80 > .75           -> 3
    # (1,1) c0 .75 == high (not >) -> 255
    # (1,2) c0 .30 between         -> 255
    expected = torch.tensor([[[1, IGN, 0], [3, IGN, IGN]]])
    assert labels.dtype == torch.long
    assert labels.shape == (1, 2, 3)
    assert torch.equal(labels, expected)
    assert not (labels == 2).any()  # absent class 1 -> label 2 never appears


def test_cams_to_pseudo_labels_custom_ignore_and_batch():
    cams, img_labels = _three_class_cams()
    cams = torch.cat([cams, cams])
    # second image only has class 1 (the all-ones map) -> all foreground 2
    img_labels = torch.tensor([[1., 0., 1.], [0., 1., 0.]])
    labels = cams_to_pseudo_labels(
        cams, img_labels, high_thr=0.75, low_thr=0.25, ignore_index=7)
    assert torch.equal(labels[0], torch.tensor([[1, 7, 0], [3, 7, 7]]))
    assert torch.equal(labels[1], torch.full((2, 3), 2))


def test_cams_to_pseudo_labels_all_zero_cam_is_background():
    cams = min_max_normalize(torch.zeros(1, 2, 3, 3))
    labels = cams_to_pseudo_labels(
        cams, torch.tensor([[1., 1.]]), high_thr=0.7, low_thr=0.25)
    assert torch.equal(labels, torch.zeros(1, 3, 3, dtype=torch.long))


def test_cams_to_labels():
    cams, img_labels = _three_class_cams()
    labels = cams_to_labels(cams, img_labels, bg_thr=0.25)
    # no ignore band: > 0.25 -> best present class + 1, <= 0.25 -> 0
    # (0,0) c0 .90 -> 1 ; (0,1) c2 .60 -> 3 ; (0,2) c0 .25 -> 0
    # (1,0) c2 .80 -> 3 ; (1,1) c0 .75 -> 1 ; (1,2) c0 .30 -> 1
    expected = torch.tensor([[[1, 3, 0], [3, 1, 1]]])
    assert labels.dtype == torch.long
    assert torch.equal(labels, expected)
    assert not (labels == IGN).any()
    labels = cams_to_labels(cams, img_labels, bg_thr=0.8)
    assert torch.equal(labels, torch.tensor([[[1, 0, 0], [0, 0, 0]]]))


def test_cams_to_labels_all_zero():
    labels = cams_to_labels(
        min_max_normalize(torch.zeros(2, 3, 2, 2)), torch.ones(2, 3), 0.0)
    assert torch.equal(labels, torch.zeros(2, 2, 2, dtype=torch.long))


def test_flip_fused_cam_same_size():
    # B = 2, C = 1: rows 0..1 are the plain images, rows 2..3 their flips
    plain0 = [[0., 0.], [3., 0.]]
    plain1 = [[1., 1.], [1., 1.]]
    flip0 = [[1., 0.], [0., 0.]]  # flipped back: [[0, 1], [0, 0]]
    flip1 = [[0., 5.], [2., 0.]]  # flipped back: [[5, 0], [0, 2]]
    cams = torch.tensor([[plain0], [plain1], [flip0], [flip1]])
    out = flip_fused_cam(cams, (2, 2))
    # max(plain, unflipped):
    expected = torch.tensor([[[[0., 1.], [3., 0.]]], [[[5., 1.], [1., 2.]]]])
    assert out.shape == (2, 1, 2, 2)
    assert torch.allclose(out, expected)


def test_flip_fused_cam_resizes():
    cams = torch.full((2, 3, 2, 2), 0.5)
    cams[1] = 2.0  # the flipped copy is larger everywhere
    out = flip_fused_cam(cams, (5, 7))
    assert out.shape == (1, 3, 5, 7)
    assert torch.allclose(out, torch.full((1, 3, 5, 7), 2.0))


def test_cam_relu_acts_before_resizing():
    """ReLU(Z W^T) at token resolution, then bilinear resizing (authors).

    Token CAM [-4, 4] resized to 4 pixels: ReLU first gives the bilinear
    samples of [0, 4] at x = -0.25, 0.25, 0.75, 1.25 (clamped), i.e.
    [0, 1, 3, 4]; ReLU after resizing would give [0, 0, 2, 4].
    """
    from mmseg_fsr.models.heads import CAMHead
    head = CAMHead(in_channels=1, num_classes=1)
    with torch.no_grad():
        head.classifier.weight.fill_(1.)
        head.aux_classifier.weight.fill_(1.)
    tokens = torch.tensor([[[[-4., 4.]]]])
    cam, aux = head.cams(tokens, tokens)
    both = torch.cat([cam, cam.flip(-1)])  # the image and its flip
    out = flip_fused_cam(both, (1, 4))
    assert torch.equal(out, torch.tensor([[[[0., 1., 3., 4.]]]]))
    assert torch.equal(aux, torch.tensor([[[[0., 4.]]]]))
