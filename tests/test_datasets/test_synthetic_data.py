"""Tests for the synthetic VOC-layout WSSS data generator and its CLI."""
import os
import os.path as osp
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.datasets import PascalVOCDataset
from PIL import Image

from mmseg_fsr.testing import generate_synthetic_voc

REPO = Path(__file__).resolve().parents[2]
CLASS_IDS = (1, 2, 3, 4)


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> str:
    """A small generated dataset shared by the tests of this module."""
    root = str(tmp_path_factory.mktemp('synthetic_voc'))
    generate_synthetic_voc(root, num_train=12, num_val=4, img_size=(64, 80))
    return root


def _read_list(root: str, split: str) -> list:
    path = osp.join(root, 'ImageSets', 'Segmentation', f'{split}.txt')
    with open(path) as f:
        return f.read().split()


def _all_files(root: str) -> dict:
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name != 'summary.json':  # holds the output path
                path = osp.join(dirpath, name)
                with open(path, 'rb') as f:
                    files[osp.relpath(path, root)] = f.read()
    return files


def test_layout_and_summary(tmp_path):
    summary = generate_synthetic_voc(
        str(tmp_path), num_train=6, num_val=3, img_size=(48, 64), seed=1)
    assert summary['num_train'] == 6 and summary['num_val'] == 3
    assert summary['class_ids'] == list(CLASS_IDS)
    assert summary['class_names'] == ['aeroplane', 'bicycle', 'bird', 'boat']
    train, val = _read_list(str(tmp_path), 'train'), _read_list(
        str(tmp_path), 'val')
    assert len(train) == 6 and len(val) == 3
    assert _read_list(str(tmp_path), 'aug') == train  # aug == "train_aug"
    assert not set(train) & set(val)
    for name in train + val:
        img = cv2.imread(str(tmp_path / 'JPEGImages' / f'{name}.jpg'))
        assert img.shape == (48, 64, 3)
        for seg_dir in ('SegmentationClass', 'SegmentationClassAug'):
            assert (tmp_path / seg_dir / f'{name}.png').is_file()


def test_deterministic(tmp_path):
    kwargs = dict(num_train=5, num_val=2, img_size=(48, 48))
    generate_synthetic_voc(str(tmp_path / 'a'), seed=3, **kwargs)
    generate_synthetic_voc(str(tmp_path / 'b'), seed=3, **kwargs)
    generate_synthetic_voc(str(tmp_path / 'c'), seed=4, **kwargs)
    a, b, c = (_all_files(str(tmp_path / d)) for d in 'abc')
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    jpgs = [k for k in a if k.endswith('.jpg')]
    assert any(a[k] != c[k] for k in jpgs)


def test_masks_are_voc_palette_pngs_with_ignore_border(voc_root):
    voc_palette = np.array(PascalVOCDataset.METAINFO['palette'], np.uint8)
    for name in _read_list(voc_root, 'train') + _read_list(voc_root, 'val'):
        png = Image.open(
            osp.join(voc_root, 'SegmentationClass', f'{name}.png'))
        assert png.mode == 'P'
        palette = np.array(png.getpalette(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(palette[:21], voc_palette)
        np.testing.assert_array_equal(palette[255], [224, 224, 192])
        label = np.array(png)
        ids = set(np.unique(label).tolist())
        fg = ids - {0, 255}
        assert fg and fg <= set(CLASS_IDS), f'{name}: {ids}'
        assert 255 in ids
        # The ignore band separates every object from the background: no
        # background pixel touches a foreground pixel.
        is_fg = ((label != 0) & (label != 255)).astype(np.uint8)
        grown = cv2.dilate(is_fg, np.ones((3, 3), np.uint8)).astype(bool)
        assert not (grown & (label == 0)).any()


def test_label_file_matches_masks(voc_root):
    # pickle-free: plain numpy loading with allow_pickle=False reads it
    with np.load(osp.join(voc_root, 'cls_labels_onehot.npz'),
                 allow_pickle=False) as archive:
        labels = {name: archive[name] for name in archive.files}
    assert sorted(labels) == sorted(
        _read_list(voc_root, 'train') + _read_list(voc_root, 'val'))
    for name in _read_list(voc_root, 'train') + _read_list(voc_root, 'val'):
        label = np.array(
            Image.open(osp.join(voc_root, 'SegmentationClassAug',
                                f'{name}.png')))
        expected = np.zeros(20)
        for c in set(np.unique(label).tolist()) - {0, 255}:
            expected[c - 1] = 1
        np.testing.assert_array_equal(labels[name], expected)


def test_every_class_is_used(voc_root):
    seen = set()
    for name in _read_list(voc_root, 'train'):
        label = np.array(
            Image.open(osp.join(voc_root, 'SegmentationClass', f'{name}.png')))
        seen |= set(np.unique(label).tolist())
    assert seen - {0, 255} == set(CLASS_IDS)


def test_stock_voc_dataset_reads_it(voc_root):
    init_default_scope('mmseg')
    ds = PascalVOCDataset(
        ann_file='ImageSets/Segmentation/train.txt',
        data_root=voc_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations')
        ])
    assert len(ds) == 12
    sample = ds[0]
    assert sample['img'].shape == (64, 80, 3)
    assert set(np.unique(sample['gt_seg_map']).tolist()) <= {0, 255,
                                                             *CLASS_IDS}


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='class_ids'):
        generate_synthetic_voc(str(tmp_path), class_ids=(1, 9))
    with pytest.raises(ValueError, match='img_size'):
        generate_synthetic_voc(str(tmp_path), img_size=(16, 16))


def test_cli(tmp_path, monkeypatch, capsys):
    script = str(REPO / 'tools' / 'dataset_converters' /
                 'make_synthetic_voc.py')
    monkeypatch.setattr(sys, 'argv', [script, '--help'])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(script, run_name='__main__')
    assert exc.value.code == 0
    assert '--num-train' in capsys.readouterr().out

    out_dir = str(tmp_path / 'cli')
    monkeypatch.setattr(sys, 'argv', [
        script, out_dir, '--num-train', '3', '--num-val', '2', '--img-size',
        '40', '40', '--class-ids', '5', '6'
    ])
    runpy.run_path(script, run_name='__main__')
    assert '"seconds"' in capsys.readouterr().out
    assert len(_read_list(out_dir, 'aug')) == 3
    assert len(_read_list(out_dir, 'val')) == 2
