"""Tests for tools/dataset_converters/voc_aug.py on a tiny fake VOC + SBD."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'dataset_converters', 'voc_aug.py')

VOC_TRAIN = ['2007_000001', '2007_000002', '2007_000003']
VOC_VAL = ['2007_000010', '2007_000011']
# 2007_000002 is in VOC train too (VOC mask wins), 2007_000010 in VOC val
# (excluded), 2008_000003 has no .mat, 2008_000004 no JPEG.
SBD_TRAIN = ['2007_000002', '2008_000001', '2008_000002']
SBD_VAL = ['2007_000010', '2008_000003', '2008_000004']
EXPECTED_AUG = VOC_TRAIN + ['2008_000001', '2008_000002']
H, W = 6, 8


def load_tool():
    spec = importlib.util.spec_from_file_location('voc_aug_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sbd_mask(name: str) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[1:4, 2:6] = int(name[-1]) + 10  # distinct per image, <= 20
    return mask


@pytest.fixture
def data(tmp_path):
    tool = load_tool()
    voc = tmp_path / 'VOCdevkit' / 'VOC2012'
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (voc / sub).mkdir(parents=True)
    names = set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL) - {'2008_000004'}
    for name in names:
        Image.new('RGB', (W, H)).save(voc / 'JPEGImages' / f'{name}.jpg')
    for name in VOC_TRAIN + VOC_VAL:
        mask = np.full((H, W), 255, np.uint8)  # VOC border style
        mask[1:5, 1:7] = 5
        png = Image.fromarray(mask)
        png.putpalette(tool.voc_palette())
        png.save(voc / 'SegmentationClass' / f'{name}.png')
    sets = voc / 'ImageSets' / 'Segmentation'
    (sets / 'train.txt').write_text('\n'.join(VOC_TRAIN) + '\n')
    (sets / 'val.txt').write_text('\n'.join(VOC_VAL) + '\n')

    sbd = tmp_path / 'benchmark_RELEASE' / 'dataset'
    (sbd / 'cls').mkdir(parents=True)
    for name in SBD_TRAIN + SBD_VAL:
        if name == '2008_000003':
            continue
        boundaries = np.empty((20, 1), dtype=object)
        boundaries[:] = [[np.zeros((H, W), np.uint8)] for _ in range(20)]
        savemat(
            sbd / 'cls' / f'{name}.mat', {
                'GTcls': {
                    'Boundaries': boundaries,
                    'Segmentation': sbd_mask(name),
                    'CategoriesPresent': np.array([int(name[-1]) + 10]),
                }
            })
    (sbd / 'train.txt').write_text('\n'.join(SBD_TRAIN) + '\n')
    (sbd / 'val.txt').write_text('\n'.join(SBD_VAL) + '\n')
    return tool, tmp_path, voc


def run_cli(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_sbd_conversion_lists_and_report(data):
    tool, root, voc = data
    res = run_cli(root / 'VOCdevkit', '--sbd-path', root / 'benchmark_RELEASE',
                  '--nproc', 2)
    assert res.returncode == 0, res.stderr
    sets = voc / 'ImageSets' / 'Segmentation'
    assert (sets / 'aug.txt').read_text().split() == EXPECTED_AUG
    # Size report warns: 5 train_aug / 3 train / 2 val here.
    assert 'WARNING' in res.stderr and "'aug'" in res.stderr
    assert '2008_000003' in res.stderr and '2008_000004' in res.stderr
    assert '10582' in res.stdout and '1449' in res.stdout

    out = voc / 'SegmentationClassAug'
    assert sorted(p[:-4] for p in os.listdir(out)) == sorted(EXPECTED_AUG +
                                                             VOC_VAL)
    sbd_png = Image.open(out / '2008_000001.png')
    assert sbd_png.mode == 'P'
    np.testing.assert_array_equal(np.array(sbd_png), sbd_mask('2008_000001'))
    palette = sbd_png.getpalette()
    assert palette[3:6] == [128, 0, 0]  # aeroplane
    assert palette[33:36] == [192, 128, 0]  # 11: diningtable
    # VOC masks win over SBD for VOC images and are copied byte for byte.
    for name in ('2007_000002', '2007_000010'):
        assert (out / f'{name}.png').read_bytes() == (
            voc / 'SegmentationClass' / f'{name}.png').read_bytes()

    # Re-running resumes: every label is already valid.
    res = run_cli(root / 'VOCdevkit', '--sbd-path', root / 'benchmark_RELEASE')
    assert '0 written, 7 already valid' in res.stdout


def test_existing_segmentation_class_aug_folder(data, capsys):
    tool, root, voc = data
    aug_dir = root / 'SegmentationClassAug'
    aug_dir.mkdir()
    for name in ['2008_000001', '2008_000002', '2007_000010']:
        Image.fromarray(sbd_mask(name)).save(aug_dir / f'{name}.png')
    tool.main([str(root / 'VOCdevkit'), '--aug-ann-dir', str(aug_dir)])
    sets = voc / 'ImageSets' / 'Segmentation'
    assert (sets / 'aug.txt').read_text().split() == EXPECTED_AUG
    out = voc / 'SegmentationClassAug'
    np.testing.assert_array_equal(
        np.array(Image.open(out / '2008_000001.png')), sbd_mask('2008_000001'))
    assert 'WARNING' in capsys.readouterr().err

    # A corrupt source label is an error that names the file.
    (aug_dir / '2008_000002.png').write_bytes(b'broken')
    with pytest.raises(ValueError, match='2008_000002.png'):
        tool.main([
            str(root / 'VOCdevkit'), '--aug-ann-dir',
            str(aug_dir), '--overwrite'
        ])


def test_validation_names_missing_input(data):
    tool, root, voc = data
    res = run_cli(root / 'VOCdevkit', '--sbd-path', root / 'nowhere')
    assert res.returncode != 0 and 'nowhere' in res.stderr
    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').unlink()
    res = run_cli(root / 'VOCdevkit', '--sbd-path', root / 'benchmark_RELEASE')
    assert res.returncode != 0
    assert 'val.txt' in res.stderr
    assert run_cli('--help').returncode == 0


def test_read_sbd_mat_rejects_bad_labels(tmp_path):
    tool = load_tool()
    path = tmp_path / 'bad.mat'
    savemat(path, {'GTcls': {'Segmentation': np.full((2, 2), 30, np.uint8)}})
    with pytest.raises(ValueError, match='bad.mat'):
        tool.read_sbd_mat(str(path))
    assert tool.build_aug_list(['a', 'b'], ['c'], ['c', 'd', 'a']) == [
        'a', 'b', 'd'
    ]
