"""tools/check_dataset.py: one report of every bad file of a config's data."""
import importlib.util
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mmseg_fsr.testing import CPU_CONFIG

REPO = Path(__file__).resolve().parents[2]
SPLIT = 'ImageSets/Segmentation/aug.txt'


def _tool():
    spec = importlib.util.spec_from_file_location(
        'check_dataset', REPO / 'tools' / 'check_dataset.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bad_root(synthetic_voc, tmp_path):
    """Synthetic VOC copy with one fault of each kind in the train split."""
    root = tmp_path / 'voc'
    shutil.copytree(synthetic_voc, root)
    (root / 'JPEGImages' / 'train_00001.jpg').write_bytes(b'')
    (root / 'SegmentationClassAug' / 'train_00002.png').unlink()
    cv2.imwrite(str(root / 'JPEGImages' / 'train_00003.jpg'),
                np.zeros((64, 1, 3), np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[5:9, 5:9] = 40  # class 40 with a 21-class config
    Image.fromarray(mask).save(root / 'SegmentationClassAug' /
                               'train_00004.png')
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(
        root / 'SegmentationClassAug' / 'train_00006.png')  # background only
    (root / 'JPEGImages' / 'train_00007.jpg').write_bytes(b'\xff\xd8junk')
    with open(root / SPLIT, 'a') as f:
        f.write('train_00000\n\n\n')
    (root / 'labels.json').write_text('{"train_00000": [1,')
    return root


def _run(capsys, *args):
    code = _tool().main([CPU_CONFIG, *map(str, args)])
    return code, capsys.readouterr().out


def test_clean_data_passes(synthetic_voc, capsys):
    code, out = _run(capsys, '--data-root', synthetic_voc)
    assert code == 0, out
    assert '[train] WSSSVOCDataset' in out and '16 entries, OK' in out
    assert '[val] WSSSVOCDataset' in out and '4 entries, OK' in out
    assert 'fast check of 2 data set(s)' in out and 'no problem found' in out


def test_fast_mode_lists_every_bad_file(bad_root, capsys):
    code, out = _run(capsys, '--data-root', bad_root, '--split', 'train')
    assert code == 1
    for expected in (
            f"{bad_root / SPLIT}: line 17: id 'train_00000' is listed again",
            f'{bad_root}/JPEGImages/train_00001.jpg: image file is empty',
            f'{bad_root}/SegmentationClassAug/train_00002.png: mask file '
            'missing',
            # sizes from the file headers, nothing decoded
            f'{bad_root}/JPEGImages/train_00003.jpg: image is 1x64 px',
            f'{bad_root}/SegmentationClassAug/train_00003.png: mask is 64x64 '
            f'px but its image {bad_root}/JPEGImages/train_00003.jpg is 1x64',
            f'{bad_root}/JPEGImages/train_00007.jpg: image header unreadable',
            f'warning: {bad_root / SPLIT}: ignored 2 blank line(s)'):
        assert expected in out, expected
    assert '[val]' not in out
    assert 'fast check of 1 data set(s)' in out and '6 problem(s)' in out


def test_full_mode_decodes_and_writes_the_report(bad_root, tmp_path,
                                                 capsys):
    report = tmp_path / 'report.txt'
    code, out = _run(capsys, '--data-root', bad_root, '--full', '--out',
                     report, '--cfg-options',
                     'train_dataloader.dataset.img_label_file=labels.json')
    assert code == 1
    assert '12/12' in out  # progress bar over the samples left to decode
    expected = [
        f"{bad_root / SPLIT}: line 17: id 'train_00000' is listed again",
        f'{bad_root}/JPEGImages/train_00001.jpg: image file is empty',
        f'{bad_root}/SegmentationClassAug/train_00002.png: mask file '
        'missing',
        f'image label file {bad_root}/labels.json is not valid JSON',
        f'{bad_root}/JPEGImages/train_00003.jpg: image is 1x64 px',
        f'{bad_root}/SegmentationClassAug/train_00003.png: mask is 64x64 px '
        f'but its image {bad_root}/JPEGImages/train_00003.jpg is 1x64',
        f'{bad_root}/SegmentationClassAug/train_00004.png: class id(s) [40] '
        'outside 0..20',
        f'{bad_root}/SegmentationClassAug/train_00006.png: no foreground '
        'class',
        f'{bad_root}/JPEGImages/train_00007.jpg: image header unreadable',
    ]
    for line in expected:
        assert line in out, line
    assert '[train] WSSSVOCDataset' in out and '9 problem(s)' in out
    assert '[val] WSSSVOCDataset' in out and '4 entries, OK' in out
    assert report.read_text().strip() == out[out.index('[train]'):].strip()


def test_missing_data_root_is_reported(tmp_path, capsys):
    code, out = _run(capsys, '--data-root', tmp_path / 'nowhere', '--split',
                     'val')
    assert code == 1
    assert f'data_root not found: {tmp_path / "nowhere"}' in out
