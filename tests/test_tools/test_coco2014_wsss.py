"""Tests for tools/dataset_converters/coco2014_wsss.py on a tiny COCO."""
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
mask_utils = pytest.importorskip('pycocotools.mask')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'dataset_converters', 'coco2014_wsss.py')
H, W = 8, 10
# Category ids 1, 3, 18 -> class ids 1, 2, 3 (ascending id order).
CATS = [{'id': 18, 'name': 'dog'}, {'id': 1, 'name': 'person'},
        {'id': 3, 'name': 'car'}]
A, B, C = (f'COCO_train2014_00000000000{i}' for i in (1, 2, 3))
V = 'COCO_val2014_000000000042'


def box(rows: slice, cols: slice, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[rows, cols] = 1
    return m


def uncompressed_rle(m: np.ndarray) -> dict:
    """Column-major run lengths starting with a zero run (COCO format)."""
    flat = m.flatten(order='F')
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {'size': list(m.shape), 'counts': counts}


def compressed_rle(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m))
    return {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}


def expected_mask_a() -> np.ndarray:
    """Image A painted by hand: crowd, then largest to smallest, ties by id."""
    m = np.zeros((H, W), np.uint8)
    m[6:8, :] = 255  # crowd (ann 15)
    m[0:6, 0:6] = 3  # polygon dog, 36 px (ann 10)
    m[4:8, 4:8] = 2  # compressed RLE car, 16 px (ann 12), over dog + crowd
    m[1:3, 1:3] = 1  # uncompressed RLE person, 4 px (ann 11)
    m[0:2, 8:10] = 1  # polygon person, 4 px (ann 13)
    m[1:5, 9] = 2  # polygon car, 4 px (ann 14): same size, higher id on top
    return m


def annotation(ann_id, image_id, cat, segm, crowd=0):
    return {'id': ann_id, 'image_id': image_id, 'category_id': cat,
            'iscrowd': crowd, 'segmentation': segm, 'area': 0.0,
            'bbox': [0, 0, 1, 1]}


@pytest.fixture
def root(tmp_path):
    (tmp_path / 'annotations').mkdir()
    for folder, names in (('train2014', (A, B, C)), ('val2014', (V, ))):
        (tmp_path / folder).mkdir()
        for name in names:
            Image.new('RGB', (W, H)).save(tmp_path / folder / f'{name}.jpg')
    train = {
        'images': [{'id': i + 1, 'file_name': f'{n}.jpg', 'height': H,
                    'width': W} for i, n in enumerate((A, B, C))],
        'categories': CATS,
        'annotations': [
            # Two polygons; the 4-number one has no area and is skipped.
            annotation(10, 1, 18, [[0, 0, 6, 0, 6, 6, 0, 6], [1, 1, 2, 2]]),
            annotation(11, 1, 1, uncompressed_rle(box(slice(1, 3),
                                                      slice(1, 3)))),
            annotation(12, 1, 3, compressed_rle(box(slice(4, 8),
                                                    slice(4, 8)))),
            annotation(13, 1, 1, [[8, 0, 10, 0, 10, 2, 8, 2]]),
            annotation(14, 1, 3, [[9, 1, 10, 1, 10, 5, 9, 5]]),
            annotation(15, 1, 18, uncompressed_rle(box(slice(6, 8),
                                                       slice(0, 10))), 1),
            # Image C: crowd only -> no class.
            annotation(16, 3, 1, uncompressed_rle(box(slice(0, 4),
                                                      slice(0, 4))), 1),
        ],
    }
    val = {
        'images': [{'id': 42, 'file_name': f'{V}.jpg', 'height': H,
                    'width': W}],
        'categories': CATS,
        'annotations': [annotation(20, 42, 3, [[0, 0, 2, 0, 2, 2, 0, 2]])],
    }
    for split, coco in (('train', train), ('val', val)):
        with open(tmp_path / 'annotations' / f'instances_{split}2014.json',
                  'w') as f:
            json.dump(coco, f)
    return tmp_path


def run_cli(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def read_mask(root, folder, name):
    img = Image.open(root / 'SegmentationClass' / folder / f'{name}.png')
    assert img.mode == 'L'
    return np.array(img)


def test_masks_labels_and_lists(root):
    res = run_cli(root, '--nproc', 2)
    assert res.returncode == 0, res.stderr

    np.testing.assert_array_equal(
        read_mask(root, 'train2014', A), expected_mask_a())
    np.testing.assert_array_equal(
        read_mask(root, 'train2014', B), np.zeros((H, W), np.uint8))
    expected_c = np.zeros((H, W), np.uint8)
    expected_c[0:4, 0:4] = 255
    np.testing.assert_array_equal(read_mask(root, 'train2014', C), expected_c)
    expected_v = np.zeros((H, W), np.uint8)
    expected_v[0:2, 0:2] = 2
    np.testing.assert_array_equal(read_mask(root, 'val2014', V), expected_v)

    sets = root / 'ImageSets'
    assert (sets / 'train.txt').read_text().split() == [A]
    assert (sets / 'train_empty.txt').read_text().split() == [B, C]
    assert (sets / 'val.txt').read_text().split() == [V]
    assert (sets / 'val_5k.txt').read_text().split() == [V]
    labels = json.loads((root / 'cls_labels_coco.json').read_text())
    assert labels == {A: [1, 2, 3], B: [], C: [], V: [2]}
    # 1 / 1 labelled images instead of 82,081 / 40,137: loud warning.
    assert 'WARNING' in res.stderr and '82081' in res.stderr


def test_resume_overwrite_and_single_split(root):
    assert run_cli(root).returncode == 0
    res = run_cli(root, '--splits', 'train')
    assert '0 masks written, 3 reused' in res.stdout
    # A truncated mask is not valid: regenerated on the next run.
    png = root / 'SegmentationClass' / 'train2014' / f'{A}.png'
    png.write_bytes(png.read_bytes()[:20])
    res = run_cli(root, '--splits', 'train')
    assert '1 masks written, 2 reused' in res.stdout
    np.testing.assert_array_equal(
        read_mask(root, 'train2014', A), expected_mask_a())
    res = run_cli(root, '--splits', 'train', '--overwrite')
    assert '3 masks written, 0 reused' in res.stdout
    # Converting one split keeps the other split's labels.
    labels = json.loads((root / 'cls_labels_coco.json').read_text())
    assert labels == {A: [1, 2, 3], B: [], C: [], V: [2]}


def test_errors_name_the_culprit(root, tmp_path_factory):
    assert run_cli('--help').returncode == 0

    (root / 'train2014' / f'{B}.jpg').write_bytes(b'not a jpeg')
    res = run_cli(root, '--splits', 'train')
    assert res.returncode != 0 and f'{B}.jpg' in res.stderr

    (root / 'train2014' / f'{B}.jpg').unlink()
    res = run_cli(root, '--splits', 'train')
    assert res.returncode != 0 and f'{B}.jpg' in res.stderr

    (root / 'annotations' / 'instances_val2014.json').unlink()
    res = run_cli(root, '--splits', 'val')
    assert res.returncode != 0
    assert 'instances_val2014.json' in res.stderr

    empty = tmp_path_factory.mktemp('empty')
    res = run_cli(empty)
    assert res.returncode != 0 and 'train2014' in res.stderr
