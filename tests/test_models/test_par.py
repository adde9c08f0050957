"""Tests of pixel-adaptive refinement (``mmseg_fsr.models.utils.par``)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_fsr.models.utils.par import (PixelAdaptiveRefiner,
                                        present_classes,
                                        refine_pseudo_labels)

IGN = 255
# (dy, dx) order of the 8 neighbours: row by row, centre skipped
OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0),
           (1, 1)]


def test_neighbours_shape():
    par = PixelAdaptiveRefiner(dilations=(1, 2, 4))
    out = par.neighbours(torch.randn(2, 5, 6, 7))
    assert out.shape == (2, 5, 24, 6, 7)


def test_neighbours_hand_values():
    par = PixelAdaptiveRefiner(dilations=(1, 2))
    # [[0, 1,  2,  3],
    #  [4, 5,  6,  7],
    #  [8, 9, 10, 11]]
    x = torch.arange(12.).view(1, 1, 3, 4)
    nb = par.neighbours(x)[0, 0]  # (16, 3, 4)
    # pixel (1, 1), dilation 1: the plain 3x3 ring
    assert nb[:8, 1, 1].tolist() == [0, 1, 2, 4, 6, 8, 9, 10]
    # pixel (1, 1), dilation 2: rows -1 / 3 and column -1 replicate the
    # border -> (0,0) (0,1) (0,3) (1,0) (1,3) (2,0) (2,1) (2,3)
    assert nb[8:, 1, 1].tolist() == [0, 1, 3, 4, 7, 8, 9, 11]
    # corner pixel (0, 0), dilation 1: everything outside is replicated
    assert nb[:8, 0, 0].tolist() == [0, 0, 1, 0, 1, 4, 4, 5]
    # every pixel against the independent clamp formula
    for k, (d, (dy, dx)) in enumerate(
            (d, o) for d in (1, 2) for o in OFFSETS):
        for i in range(3):
            for j in range(4):
                ii = min(max(i + dy * d, 0), 2)
                jj = min(max(j + dx * d, 0), 3)
                assert nb[k, i, j] == x[0, 0, ii, jj], (k, i, j)


def test_affinity_rows_sum_to_one_plus_pos_weight():
    torch.manual_seed(0)
    par = PixelAdaptiveRefiner(dilations=(1, 2, 4), pos_weight=0.05)
    aff = par.affinity(torch.rand(2, 3, 9, 11))
    assert aff.shape == (2, 1, 24, 9, 11)
    assert (aff >= 0).all()
    assert torch.allclose(aff.sum(dim=2), torch.full((2, 1, 9, 11), 1.05),
                          atol=1e-5)


def test_affinity_on_flat_image_is_uniform_plus_spatial_term():
    # Flat image: colour term is uniform 1/8. Spatial term for dilation 1:
    # distances 1 (4 axis neighbours) and sqrt(2) (4 diagonals), unbiased
    # std s = (sqrt(2) - 1) / 2 * sqrt(8 / 7); logits -(dist / s / 0.3)^2
    # are -226.7 and -453.3, so softmax gives 1/4 to each axis neighbour and
    # exp(-226.7) ~ 0 to the diagonals.
    s = (math.sqrt(2) - 1) / 2 * math.sqrt(8 / 7)
    assert abs(-(1 / s / 0.3)**2 - -226.7) < 0.1
    par = PixelAdaptiveRefiner(dilations=(1, ), pos_weight=0.01)
    aff = par.affinity(torch.full((1, 3, 4, 4), 0.3))[0, 0, :, 2, 1]
    axis = 1 / 8 + 0.01 * 0.25
    diag = 1 / 8
    expected = torch.tensor([diag, axis, diag, axis, axis, diag, axis, diag])
    assert torch.allclose(aff, expected, atol=1e-6)


def test_forward_shape_and_upsampling():
    torch.manual_seed(0)
    par = PixelAdaptiveRefiner(dilations=(1, 2), num_iter=3)
    out = par(torch.rand(2, 3, 8, 16), torch.rand(2, 4, 4, 8))
    assert out.shape == (2, 4, 8, 16)
    assert out.dtype == torch.float32
    # no iterations: just the align_corners=True resize of the scores
    par0 = PixelAdaptiveRefiner(dilations=(1, ), num_iter=0)
    scores = torch.tensor([[[[0., 3.]]]])
    out = par0(torch.rand(1, 3, 1, 4), scores)
    assert torch.allclose(out, torch.tensor([[[[0., 1., 2., 3.]]]]))


def test_output_invariant_to_per_channel_affine_image_change():
    torch.manual_seed(0)
    par = PixelAdaptiveRefiner(dilations=(1, 2, 4), num_iter=5)
    img = torch.rand(2, 3, 12, 12)
    scores = torch.rand(2, 3, 6, 6)
    a = torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1)
    b = torch.tensor([10.0, -4.0, 0.3]).view(1, 3, 1, 1)
    ref = par(img, scores)
    out = par(a * img + b, scores)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
    # ...but not to a change of the image content itself
    other = par(img.flip(-1), scores)
    assert not torch.allclose(other, ref, rtol=1e-4, atol=1e-5)


def _two_colour_case(h=8, w=16):
    img = torch.zeros(1, 3, h, w)
    img[:, 0, :, :w // 2] = 1  # left half red
    img[:, 2, :, w // 2:] = 1  # right half blue
    j = torch.arange(w).float()
    # class 0 blurred across the edge: boundary at 9.5 instead of 7.5
    s0 = torch.sigmoid(9.5 - j).expand(h, w)
    scores = torch.stack([s0, 1 - s0])[None]
    return img, scores


def test_propagation_snaps_boundary_to_colour_edge():
    img, scores = _two_colour_case()
    before = scores.argmax(1)[0]
    assert before[0].tolist() == [0] * 10 + [1] * 6  # columns 8, 9 wrong
    par = PixelAdaptiveRefiner(dilations=(1, 2), num_iter=10)
    after = par(img, scores).argmax(1)[0]
    expected = torch.tensor([0] * 8 + [1] * 8).expand(8, 16)
    assert torch.equal(after, expected)
    # control: on a flat image the boundary does not move to column 8
    flat = par(torch.ones_like(img), scores).argmax(1)[0]
    assert (flat[:, 8:10] == 0).all()


# ----------------------------------------------------------- pseudo labels
def _refine(cams, img_labels, refiner=None, images=None, **kwargs):
    b, _, h, w = cams.shape
    if images is None:
        images = torch.ones(b, 3, h, w)
    if refiner is None:
        # no propagation: isolates the background / ignore logic
        refiner = PixelAdaptiveRefiner(dilations=(1, ), num_iter=0)
    kwargs.setdefault('down_scale', 1)
    return refine_pseudo_labels(
        refiner, images, cams, img_labels, high_thr=0.7, low_thr=0.25,
        ignore_index=IGN, **kwargs)


def test_refine_pseudo_labels_bg_ignore_fg_logic():
    # (1, 3, 1, 4): class 1 absent but huge everywhere.
    c0 = [[0.9, 0.5, 0.1, 0.0]]
    c1 = [[100., 100., 100., 100.]]
    c2 = [[0.0, 0.0, 0.0, 0.8]]
    cams = torch.tensor([[c0, c1, c2]])
    labels = _refine(cams, torch.tensor([[1., 0., 1.]]))
    # high run (bg 0.7):  argmax(.7 | .9,.0) -> c0 ; (.7 | .5,.0) -> bg ;
    #                     (.7 | .1,.0) -> bg ; (.7 | .0,.8) -> c2
    # low run  (bg 0.25): c0 ; c0 ; bg ; c2
    # -> [1, ignore (only high says bg), 0 (both say bg), 3]
    assert labels.dtype == torch.long
    assert torch.equal(labels, torch.tensor([[[1, IGN, 0, 3]]]))


def test_refine_pseudo_labels_absent_class_never_appears():
    torch.manual_seed(0)
    cams = torch.rand(2, 4, 6, 6)
    cams[:, 2] = 1e4  # absent in both images
    img_labels = torch.tensor([[1., 0., 0., 1.], [0., 1., 0., 0.]])
    labels = _refine(
        cams, img_labels,
        refiner=PixelAdaptiveRefiner(dilations=(1, 2), num_iter=3),
        images=torch.rand(2, 3, 6, 6))
    assert labels.shape == (2, 6, 6)
    assert set(labels[0].unique().tolist()) <= {0, 1, 4, IGN}
    assert set(labels[1].unique().tolist()) <= {0, 2, IGN}
    assert not (labels == 3).any()


def test_refine_pseudo_labels_output_at_image_size_with_real_par():
    # image 16x12, CAMs at 4x3, PAR at half resolution; constant CAMs on a
    # flat image keep their label everywhere after propagation.
    cams = torch.zeros(3, 2, 4, 3)
    cams[0, 0] = 0.9  # -> class 1 everywhere
    cams[1, 1] = 0.5  # -> ignore everywhere
    cams[2, 1] = 0.1  # -> background everywhere
    img_labels = torch.ones(3, 2)
    refiner = PixelAdaptiveRefiner(dilations=(1, 2), num_iter=4)
    labels = refine_pseudo_labels(
        refiner, torch.full((3, 3, 16, 12), 0.2), cams, img_labels,
        high_thr=0.7, low_thr=0.25, ignore_index=IGN, down_scale=2)
    assert labels.shape == (3, 16, 12)
    assert (labels[0] == 1).all()
    assert (labels[1] == IGN).all()
    assert (labels[2] == 0).all()


@pytest.mark.parametrize('ignore_index', [255, 99])
def test_refine_pseudo_labels_image_without_classes_is_background(
        ignore_index):
    cams = torch.rand(1, 3, 4, 4)
    labels = refine_pseudo_labels(
        PixelAdaptiveRefiner(dilations=(1, ), num_iter=2),
        torch.rand(1, 3, 8, 8), cams, torch.zeros(1, 3), 0.7, 0.25,
        ignore_index=ignore_index)
    assert torch.equal(labels, torch.zeros(1, 8, 8, dtype=torch.long))


# ----------------------------------------- only the image's own classes
def _all_channel_reference(refiner, images, cams, img_labels, high_thr,
                           low_thr, ignore_index=255, down_scale=2):
    """The former implementation: every class refined, absent ones set to
    probability 0 (PAR's output for them stays 0)."""
    b, _, h, w = images.shape
    small = (h // down_scale, w // down_scale)
    images = F.interpolate(images.float(), size=small, mode='bilinear',
                           align_corners=False)
    cams = F.interpolate(cams.float(), size=small, mode='bilinear',
                         align_corners=False)
    present = torch.cat([img_labels.new_ones(b, 1), img_labels], dim=1) > 0
    scores = torch.cat([
        torch.cat([cams.new_full((b, 1, *small), bg), cams], dim=1)
        .masked_fill(~present[:, :, None, None], float('-inf')).softmax(1)
        for bg in (high_thr, low_thr)
    ])
    refined = F.interpolate(refiner(images.repeat(2, 1, 1, 1), scores),
                            size=(h, w), mode='bilinear', align_corners=False)
    refined = refined.masked_fill(~present.repeat(2, 1)[:, :, None, None], -1)
    high, low = refined.argmax(dim=1).chunk(2)
    labels = high.clone()
    labels[high == 0] = ignore_index
    labels[(high == 0) & (low == 0)] = 0
    return labels


@pytest.mark.parametrize('seed', range(4))
def test_refining_present_classes_only_gives_the_same_labels(seed):
    g = torch.Generator().manual_seed(seed)
    num_classes = 20
    img_labels = torch.zeros(3, num_classes)
    for i, count in enumerate((1, 3, 0)):  # different counts, one empty
        img_labels[i, torch.randperm(num_classes, generator=g)[:count]] = 1
    images = torch.rand(3, 3, 48, 40, generator=g)
    cams = F.interpolate(torch.rand(3, num_classes, 6, 5, generator=g),
                         size=(48, 40), mode='bilinear', align_corners=False)
    refiner = PixelAdaptiveRefiner(dilations=(1, 2, 4), num_iter=5)
    ours = refine_pseudo_labels(refiner, images, cams, img_labels, 0.7, 0.25)
    reference = _all_channel_reference(refiner, images, cams, img_labels,
                                       0.7, 0.25)
    assert torch.equal(ours, reference)
    assert (ours != IGN).any() and (ours > 0).any() and (ours == 0).any()


def test_present_classes_pads_to_the_batch_maximum():
    labels = torch.tensor([[0., 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]])
    classes, valid = present_classes(labels)
    assert classes.tolist() == [[1, 3, 0], [0, 0, 0], [0, 1, 2]]
    assert valid.tolist() == [[True, True, False], [False] * 3, [True] * 3]


PEAK_MEMORY_SCRIPT = '''
import importlib.util, sys
import torch


def status(key):
    with open('/proc/self/status') as f:
        return int(next(l for l in f if l.startswith(key)).split()[1])


spec = importlib.util.spec_from_file_location('par', sys.argv[1])
par = importlib.util.module_from_spec(spec)
spec.loader.exec_module(par)
num_classes = int(sys.argv[2])
torch.manual_seed(0)
images = torch.rand(2, 3, 224, 224)
cams = torch.rand(2, num_classes, 224, 224)
labels = torch.zeros(2, num_classes)
labels[:, [3, 7]] = 1
refiner = par.PixelAdaptiveRefiner()
before = status('VmRSS:')
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # reset the peak (VmHWM), inherited across exec
par.refine_pseudo_labels(refiner, images, cams, labels, 0.7, 0.25)
print(status('VmHWM:') - before)
'''


def test_refinement_memory_does_not_grow_with_the_class_count():
    """Peak memory of the refinement (resident-set growth over the inputs,
    one fresh process each, Linux) at 81 classes (COCO) within 1.5x of 21
    (VOC); refining every class took 526 / 1775 MB here, this 180 / 180."""
    import subprocess
    import sys

    import mmseg_fsr.models.utils.par as par_module
    peaks = {}
    for num_classes in (21, 81):
        out = subprocess.run(
            [sys.executable, '-c', PEAK_MEMORY_SCRIPT, par_module.__file__,
             str(num_classes)],
            capture_output=True, text=True, check=True)
        peaks[num_classes] = int(out.stdout.split()[-1])
    assert peaks[21] > 0
    assert peaks[81] <= 1.5 * peaks[21], peaks
