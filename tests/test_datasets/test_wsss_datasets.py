"""Tests for ``WSSSVOCDataset`` and ``WSSSCOCODataset``."""
import json
import os.path as osp
import re
import shutil

import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from PIL import Image

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.datasets import (COCO_CLASSES, DatasetCheckError,
                                WSSSCOCODataset, WSSSVOCDataset)
from mmseg_fsr.testing import generate_synthetic_voc

VOC_PREFIX = dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug')
AUG_LIST = 'ImageSets/Segmentation/aug.txt'
# no num_classes: GenerateImageLabels takes the data set's class count
LABEL_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='GenerateImageLabels'),
]


@pytest.fixture(scope='module', autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('wsss_voc'))
    generate_synthetic_voc(root, num_train=8, num_val=3, img_size=(48, 48))
    return root


def _voc(root: str, **kwargs) -> WSSSVOCDataset:
    cfg = dict(
        type='WSSSVOCDataset',
        data_root=root,
        data_prefix=VOC_PREFIX,
        ann_file=AUG_LIST)
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def _names(root: str, split: str = 'aug') -> list:
    with open(osp.join(root, 'ImageSets', 'Segmentation',
                       f'{split}.txt')) as f:
        return f.read().split()


def test_voc_loads_generated_folder(voc_root):
    ds = _voc(voc_root)
    assert len(ds) == 8
    assert len(ds.metainfo['classes']) == 21
    info = ds.get_data_info(0)
    assert info['num_classes'] == 21  # for GenerateImageLabels
    assert info['img_path'] == osp.join(voc_root, 'JPEGImages',
                                        'train_00000.jpg')
    assert info['seg_map_path'].endswith('SegmentationClassAug/'
                                         'train_00000.png')
    assert 'gt_class_labels' not in info
    val = _voc(voc_root, ann_file='ImageSets/Segmentation/val.txt',
               data_prefix=dict(img_path='JPEGImages',
                                seg_map_path='SegmentationClass'))
    assert len(val) == 3


def _onehot(root: str) -> dict:
    with np.load(osp.join(root, 'cls_labels_onehot.npz')) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.parametrize('fmt', ['npz', 'npy', 'json'])
def test_voc_label_file_agrees_with_masks(voc_root, tmp_path, fmt):
    label_file = osp.join(voc_root, 'cls_labels_onehot.npz')
    onehot = _onehot(voc_root)
    if fmt == 'npy':  # the authors' format: a pickled dict
        label_file = str(tmp_path / 'labels.npy')
        np.save(label_file, onehot, allow_pickle=True)
    if fmt == 'json':
        label_file = str(tmp_path / 'labels.json')
        with open(label_file, 'w') as f:
            json.dump({
                k: (np.flatnonzero(v) + 1).tolist()
                for k, v in onehot.items()
            }, f)
    from_file = _voc(
        voc_root, img_label_file=label_file, pipeline=LABEL_PIPELINE)
    from_mask = _voc(voc_root, pipeline=LABEL_PIPELINE)
    for i in range(len(from_file)):
        info = from_file.get_data_info(i)
        assert info['gt_class_labels'].dtype == np.float32
        assert info['gt_class_labels'].shape == (20, )
        np.testing.assert_array_equal(from_file[i]['gt_class_labels'],
                                      from_mask[i]['gt_class_labels'])
        assert from_mask[i]['gt_class_labels'].sum() >= 1


def test_voc_relative_label_file_uses_data_root(voc_root):
    ds = _voc(voc_root, img_label_file='cls_labels_onehot.npz')
    assert ds.img_label_file == osp.join(voc_root, 'cls_labels_onehot.npz')
    assert 'gt_class_labels' in ds.get_data_info(0)


@pytest.mark.parametrize('lazy_init', [False, True])
def test_voc_missing_paths_are_named(voc_root, tmp_path, lazy_init):
    missing_root = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError,
                       match=f'data_root.*{re.escape(missing_root)}'):
        _voc(missing_root, lazy_init=lazy_init)
    with pytest.raises(FileNotFoundError, match='image directory.*JPEGImagez'):
        _voc(voc_root,
             data_prefix=dict(
                 img_path='JPEGImagez', seg_map_path='SegmentationClass'),
             lazy_init=lazy_init)
    with pytest.raises(FileNotFoundError, match='mask directory.*SegClass'):
        _voc(voc_root,
             data_prefix=dict(img_path='JPEGImages', seg_map_path='SegClass'),
             lazy_init=lazy_init)
    with pytest.raises(FileNotFoundError, match='ann_file.*train_aug.txt'):
        _voc(voc_root, ann_file='ImageSets/Segmentation/train_aug.txt',
             lazy_init=lazy_init)
    with pytest.raises(FileNotFoundError, match='img_label_file.*nolabels'):
        _voc(voc_root, img_label_file='nolabels.npy', lazy_init=lazy_init)


def test_voc_listed_name_without_image(voc_root, tmp_path):
    split = tmp_path / 'split.txt'
    split.write_text('train_00000\nno_such_image\n')
    with pytest.raises(DatasetCheckError,
                       match=r'split.txt\): 2 problem\(s\)(.|\n)*'
                       r'no_such_image\.jpg: image file missing(.|\n)*'
                       r'no_such_image\.png: mask file missing'):
        _voc(voc_root, ann_file=str(split))


def test_voc_label_file_problems(voc_root, tmp_path):
    onehot = _onehot(voc_root)
    partial = dict(onehot)
    del partial['train_00003']
    partial_file = str(tmp_path / 'partial.npy')
    np.save(partial_file, partial, allow_pickle=True)
    with pytest.raises(DatasetCheckError,
                       match="partial.npy: image 'train_00003' .*has no "
                       'entry'):
        _voc(voc_root, img_label_file=partial_file)

    short_file = str(tmp_path / 'short.npy')
    np.save(short_file, {k: v[:10] for k, v in onehot.items()})
    with pytest.raises(ValueError, match='short.npy.*10 classes.*20'):
        _voc(voc_root, img_label_file=short_file)

    bad_ids = tmp_path / 'bad.json'
    bad_ids.write_text(json.dumps({k: [35] for k in onehot}))
    with pytest.raises(ValueError, match='wrong class count: found class 35'):
        _voc(voc_root, img_label_file=str(bad_ids))


# --- COCO ---------------------------------------------------------------

COCO_MASKS = {
    # name: class ids painted into the mask (0 = background only)
    'COCO_train2014_000000000001': [1, 80],
    'COCO_train2014_000000000002': [],
    'COCO_train2014_000000000003': [17],
    'COCO_train2014_000000000004': [62, 3],
}


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> str:
    """COCO-layout folder: 4 images, one whose mask has no class."""
    root = tmp_path_factory.mktemp('wsss_coco')
    img_dir = root / 'JPEGImages' / 'train2014'
    seg_dir = root / 'SegmentationClass' / 'train2014'
    img_dir.mkdir(parents=True)
    seg_dir.mkdir(parents=True)
    for name, ids in COCO_MASKS.items():
        mask = np.zeros((32, 40), np.uint8)
        mask[:2] = 255  # ignore pixels are not a class
        for k, c in enumerate(ids):
            mask[4 + 10 * k:10 + 10 * k, 5:20] = c
        Image.fromarray(mask).save(seg_dir / f'{name}.png')
        cv2.imwrite(str(img_dir / f'{name}.jpg'),
                    np.full((32, 40, 3), 100, np.uint8))
    (root / 'train.txt').write_text(''.join(n + '\n' for n in COCO_MASKS))
    (root / 'labels.json').write_text(json.dumps(COCO_MASKS))
    return str(root)


def _coco(root: str, **kwargs) -> WSSSCOCODataset:
    cfg = dict(
        type='WSSSCOCODataset',
        data_root=root,
        data_prefix=dict(
            img_path='JPEGImages/train2014',
            seg_map_path='SegmentationClass/train2014'),
        ann_file='train.txt')
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_coco_metainfo():
    assert len(COCO_CLASSES) == 81
    assert COCO_CLASSES[1] == 'person' and COCO_CLASSES[80] == 'toothbrush'
    palette = WSSSCOCODataset.METAINFO['palette']
    assert len(palette) == 81 and len({tuple(p) for p in palette}) == 81


@pytest.mark.parametrize('use_label_file', [False, True])
def test_coco_filters_empty_images(coco_root, use_label_file):
    kwargs = dict(img_label_file='labels.json') if use_label_file else {}
    ds = _coco(coco_root, **kwargs)
    names = [
        osp.basename(ds.get_data_info(i)['img_path'])[:-4]
        for i in range(len(ds))
    ]
    assert names == [n for n, ids in COCO_MASKS.items() if ids]
    if use_label_file:
        labels = ds.get_data_info(0)['gt_class_labels']
        assert labels.shape == (80, )
        assert np.flatnonzero(labels).tolist() == [0, 79]
    everything = _coco(coco_root, filter_empty_labels=False, **kwargs)
    assert len(everything) == 4


def test_coco_labels_from_masks_through_pipeline(coco_root):
    ds = _coco(
        coco_root,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='GenerateImageLabels'),  # 81 from the data set
        ])
    labels = {
        osp.basename(ds[i]['img_path'])[:-4]:
        (np.flatnonzero(ds[i]['gt_class_labels']) + 1).tolist()
        for i in range(len(ds))
    }
    assert labels == {n: sorted(ids) for n, ids in COCO_MASKS.items() if ids}


def test_coco_errors(coco_root, tmp_path):
    with pytest.raises(FileNotFoundError, match='data_root.*missing_coco'):
        _coco(str(tmp_path / 'missing_coco'))
    with pytest.raises(FileNotFoundError, match='ann_file.*val.txt'):
        _coco(coco_root, ann_file='val.txt')
    with pytest.raises(ValueError, match='filter_empty_labels needs'):
        _coco(coco_root, data_prefix=dict(img_path='JPEGImages/train2014'))
    root = tmp_path / 'coco_bad'
    shutil.copytree(coco_root, root)
    mask = np.zeros((32, 40), np.uint8)
    mask[5:9, 5:9] = 91  # e.g. raw COCO category id instead of 1..80
    bad = root / 'SegmentationClass' / 'train2014' / \
        'COCO_train2014_000000000003.png'
    Image.fromarray(mask).save(bad)
    with pytest.raises(ValueError,
                       match=f'found class 91 in {re.escape(str(bad))}'):
        _coco(str(root))
