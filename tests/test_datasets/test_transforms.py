"""Tests for ``GenerateImageLabels``, ``PackWSSSInputs`` and the two-view
WSSS training pipeline."""
import numpy as np
import pytest
import torch
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, TRANSFORMS

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.datasets import GenerateImageLabels, PackWSSSInputs
from mmseg_fsr.testing import generate_synthetic_voc


def two_view_pipeline(crop: int = 448, prefixed: bool = True) -> list:
    """The WSSS training pipeline: two independent crops per image.

    ``mmpretrain.ColorJitter`` is not used: with numpy 2 its hue step
    (``mmcv.adjust_hue``) overflows on negative shifts, so the torchvision
    ColorJitter (what ToCo/FSR use) runs on a PIL round trip instead.
    ``prefixed=False`` spells the same inner transforms through
    ``_scope_='mmpretrain'`` on ``MultiView``.
    """
    scope = 'mmpretrain.' if prefixed else ''
    views = [
        dict(type=scope + 'RandomResizedCrop', scale=crop,
             crop_ratio_range=(0.32, 1.0)),
        dict(type=scope + 'RandomFlip', prob=0.5),
        dict(type=scope + 'NumpyToPIL', to_rgb=True),
        dict(type=scope + 'torchvision/ColorJitter', brightness=0.4,
             contrast=0.4, saturation=0.4, hue=0.1),
        dict(type=scope + 'PILToNumpy', to_bgr=True),
    ]
    multi_view = dict(type='mmpretrain.MultiView', num_views=2,
                      transforms=[views])
    if not prefixed:
        multi_view['_scope_'] = 'mmpretrain'
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='GenerateImageLabels', num_classes=21),
        multi_view,
        dict(type='PackWSSSInputs'),
    ]


@pytest.fixture(scope='module', autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('transforms_voc'))
    generate_synthetic_voc(root, num_train=4, num_val=1, img_size=(64, 64))
    return root


def _mask_results(mask: np.ndarray, **extra) -> dict:
    """What a WSSS data set hands the pipeline (VOC: 21 classes)."""
    return dict(dict(gt_seg_map=mask, seg_map_path='/data/m.png',
                     img_path='/data/i.jpg', num_classes=21), **extra)


# --- GenerateImageLabels ----------------------------------------------

def test_labels_from_mask_skip_background_and_ignore():
    mask = np.array([[0, 3, 3], [255, 20, 0]], np.uint8)
    out = GenerateImageLabels()(_mask_results(mask))
    labels = out['gt_class_labels']
    assert labels.dtype == np.float32 and labels.shape == (20, )
    assert np.flatnonzero(labels).tolist() == [2, 19]  # classes 3 and 20


def test_labels_without_background_class():
    mask = np.array([[0, 2]], np.uint8)
    out = GenerateImageLabels(num_classes=3, background_index=None)(
        _mask_results(mask))
    np.testing.assert_array_equal(out['gt_class_labels'], [1, 0, 1])


def test_existing_labels_are_kept_and_validated():
    given = np.zeros(20, np.float32)
    given[4] = 1
    mask = np.full((4, 4), 7, np.uint8)  # disagrees on purpose: not read
    out = GenerateImageLabels()(_mask_results(mask, gt_class_labels=given))
    np.testing.assert_array_equal(out['gt_class_labels'], given)
    with pytest.raises(ValueError, match='i.jpg has 80 entries.*21'):
        GenerateImageLabels()(
            _mask_results(mask, gt_class_labels=np.ones(80, np.float32)))


def test_wrong_class_count_names_the_mask():
    mask = np.array([[0, 35]], np.uint8)
    with pytest.raises(
            ValueError,
            match='wrong class count: found class 35 in /data/m.png but '
            'num_classes=21'):
        GenerateImageLabels()(_mask_results(mask))


def test_empty_label_set():
    mask = np.array([[0, 255]], np.uint8)
    with pytest.raises(ValueError,
                       match='/data/m.png has no foreground class; WSSS '
                       'training needs at least one'):
        GenerateImageLabels()(_mask_results(mask))
    out = GenerateImageLabels(allow_empty=True)(_mask_results(mask))
    assert not out['gt_class_labels'].any()


def test_needs_a_mask_and_a_class_count():
    with pytest.raises(KeyError, match='after LoadAnnotations'):
        GenerateImageLabels()(dict(img_path='/data/i.jpg', num_classes=21))
    with pytest.raises(KeyError, match='needs num_classes.*i.jpg'):
        GenerateImageLabels()(dict(img_path='/data/i.jpg'))


def test_class_count_argument_wins_over_the_data_set():
    mask = np.array([[0, 2]], np.uint8)
    out = GenerateImageLabels(num_classes=3)(_mask_results(mask))
    np.testing.assert_array_equal(out['gt_class_labels'], [0, 1])


# --- PackWSSSInputs ----------------------------------------------------

def _packable(img, **extra) -> dict:
    labels = np.zeros(20, np.float32)
    labels[[1, 6]] = 1
    return dict(img=img, gt_seg_map=np.ones((6, 8), np.uint8),
                gt_class_labels=labels, img_path='x.jpg', ori_shape=(6, 8),
                img_shape=(6, 8), **extra)


def test_pack_single_view():
    img = np.random.randint(0, 255, (6, 8, 3), np.uint8)
    results = _packable(img)
    packed = PackWSSSInputs()(results)
    assert packed['inputs'].shape == (3, 6, 8)
    assert torch.equal(packed['inputs'],
                       torch.from_numpy(img).permute(2, 0, 1))
    sample = packed['data_samples']
    assert 'gt_sem_seg' not in sample
    assert sample.gt_class_labels.dtype == torch.float32
    assert sample.gt_class_labels.nonzero().flatten().tolist() == [1, 6]
    assert sample.img_path == 'x.jpg' and sample.img_shape == (6, 8)
    assert 'gt_seg_map' in results  # the caller's dict is left intact

    packed = PackWSSSInputs(pack_seg_map=True)(_packable(img))
    assert packed['data_samples'].gt_sem_seg.data.shape == (1, 6, 8)


def test_pack_views():
    views = [np.full((5, 7, 3), v, np.uint8) for v in (1, 2)]
    packed = PackWSSSInputs()(_packable(views))
    # views along the channel axis: a (C, H, W) image to mmseg's tools
    assert packed['inputs'].shape == (6, 5, 7)
    assert packed['inputs'][3:].eq(2).all()
    assert packed['data_samples'].img_shape == (5, 7)
    assert packed['data_samples'].num_views == 2
    assert packed['data_samples'].gt_sem_seg.data.eq(255).all()
    with pytest.raises(ValueError, match='same shape'):
        PackWSSSInputs()(_packable([views[0], np.zeros((4, 7, 3), np.uint8)]))


# --- the two-view training pipeline -----------------------------------

@pytest.mark.parametrize('prefixed', [True, False])
def test_two_view_pipeline_through_dataset(voc_root, prefixed):
    ds = DATASETS.build(
        dict(
            type='WSSSVOCDataset',
            data_root=voc_root,
            data_prefix=dict(
                img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
            ann_file='ImageSets/Segmentation/aug.txt',
            pipeline=two_view_pipeline(prefixed=prefixed)))
    for i in range(2):
        out = ds[i]
        assert out['inputs'].shape == (6, 448, 448)
        assert out['inputs'].dtype == torch.uint8
        sample = out['data_samples']
        # no pixel label: an all-ignore map of the views' size
        assert sample.gt_sem_seg.shape == (448, 448)
        assert sample.gt_sem_seg.data.eq(255).all()
        assert sample.gt_class_labels.shape == (20, )
        assert sample.gt_class_labels.sum() >= 1
        assert sample.img_shape == (448, 448)


def test_two_view_pipeline_with_compose(voc_root):
    pipeline = Compose(two_view_pipeline(crop=96))
    out = pipeline(
        dict(
            img_path=f'{voc_root}/JPEGImages/train_00000.jpg',
            seg_map_path=f'{voc_root}/SegmentationClassAug/train_00000.png',
            reduce_zero_label=False,
            seg_fields=[]))
    assert out['inputs'].shape == (6, 96, 96)
    # The two crops are drawn independently.
    assert not torch.equal(out['inputs'][:3], out['inputs'][3:])


def test_transforms_are_registered():
    assert TRANSFORMS.get('GenerateImageLabels') is GenerateImageLabels
    assert TRANSFORMS.get('PackWSSSInputs') is PackWSSSInputs
    assert DATASETS.get('WSSSVOCDataset') is not None
    assert DATASETS.get('WSSSCOCODataset') is not None
