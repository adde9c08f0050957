"""Bad data is reported at start-up, every bad file at once, each with its
path; what only decoding finds names its file too."""
import json
import re
import shutil

import cv2
import numpy as np
import pytest
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from PIL import Image

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.datasets import (DatasetCheckError, WSSSCOCODataset,
                                WSSSVOCDataset)
from mmseg_fsr.datasets.checks import (SampleSpec, check_sample,
                                       read_split_file)

SPLIT = 'ImageSets/Segmentation/aug.txt'
PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='GenerateImageLabels', num_classes=21),
]


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


@pytest.fixture
def root(synthetic_voc, tmp_path):
    """A private copy of the synthetic VOC folder (16 train images)."""
    dst = tmp_path / 'voc'
    shutil.copytree(synthetic_voc, dst)
    return dst


def _voc(root, **kwargs):
    cfg = dict(
        data_root=str(root),
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        ann_file=SPLIT,
        pipeline=PIPELINE)
    cfg.update(kwargs)
    return WSSSVOCDataset(**cfg)


def _issue_lines(err):
    return [ln.strip() for ln in str(err.value).splitlines()
            if ln.startswith('  ')]


def test_empty_split_file_is_named(root):
    (root / SPLIT).write_text('')
    with pytest.raises(DatasetCheckError) as err:
        _voc(root)
    assert _issue_lines(err) == [
        f'{root / SPLIT}: split list is empty: no image listed']
    (root / SPLIT).write_text('\n\n')
    with pytest.raises(DatasetCheckError, match='has only blank lines'):
        _voc(root)


def test_zero_byte_jpeg_is_found_at_start_up(root):
    jpg = root / 'JPEGImages' / 'train_00003.jpg'
    jpg.write_bytes(b'')
    with pytest.raises(DatasetCheckError,
                       match=f'{re.escape(str(jpg))}: image file is empty'):
        _voc(root)


def test_zero_byte_jpeg_at_load_time_names_the_file(root):
    """With the start-up check off, cv2's ``!buf.empty()`` gets a note."""
    jpg = root / 'JPEGImages' / 'train_00003.jpg'
    jpg.write_bytes(b'')
    ds = _voc(root, verify_files=False)
    with pytest.raises(Exception) as err:
        ds[3]
    notes = ' '.join(getattr(err.value, '__notes__', []))
    assert f'while loading sample 3: image {jpg}' in notes


def _resize_mask(png, size):
    mask = np.array(Image.open(png))
    Image.fromarray(cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
                    ).save(png)


def test_every_size_mismatch_is_found_at_start_up(root):
    """Sizes come from the file headers (nothing decoded): one report."""
    pngs = [root / 'SegmentationClassAug' / f'train_0000{i}.png'
            for i in (1, 4, 9)]
    for png in pngs:
        _resize_mask(png, (48, 64))
    with pytest.raises(DatasetCheckError, match='3 problem') as err:
        _voc(root)
    assert _issue_lines(err) == [
        f'{png}: mask is 48x64 px but its image '
        f'{root}/JPEGImages/{png.stem}.jpg is 64x64' for png in pngs
    ]


def test_size_mismatch_at_validation_names_the_files(root, tmp_path,
                                                     monkeypatch):
    """With the start-up check off, the first validation stops naming the
    sample's image and mask (was: mmseg's IndexError in the metric)."""
    from mmengine.runner import Runner

    import mmseg_fsr.datasets.voc_wsss as voc_wsss
    from mmseg_fsr.testing import tiny_fsr_config
    png = root / 'SegmentationClass' / 'val_00001.png'
    _resize_mask(png, (32, 64))
    cfg = tiny_fsr_config(str(root), str(tmp_path / 'work'))
    cfg.val_dataloader.dataset.verify_files = False
    with pytest.raises(DatasetCheckError) as err:
        Runner.from_cfg(cfg).val()
    assert f'image {root}/JPEGImages/val_00001.jpg, mask {png}' in str(
        err.value)
    assert 'mask is 32x64 px but its image' in str(err.value)
    # the fault, without the per-sample header check
    monkeypatch.setattr(voc_wsss, 'check_headers', lambda *a, **k: [])
    cfg.work_dir = str(tmp_path / 'work2')
    with pytest.raises(IndexError):
        Runner.from_cfg(cfg).val()


def test_malformed_label_json_is_named(root):
    bad = root / 'labels.json'
    bad.write_text('{"train_00000": [1, 2],\n "train_00001": [3')
    with pytest.raises(DatasetCheckError,
                       match=f'{re.escape(str(bad))} is not valid JSON: '
                       'Expecting'):
        _voc(root, img_label_file='labels.json')


def test_one_pixel_wide_image(root):
    """A side below 16 px is reported (1 px breaks mmcv's decoding of the
    mask): by the full check, from the headers at start-up and at load
    time, naming the files."""
    jpg = root / 'JPEGImages' / 'train_00002.jpg'
    png = root / 'SegmentationClassAug' / 'train_00002.png'
    cv2.imwrite(str(jpg), np.full((64, 1, 3), 128, np.uint8))
    mask = np.zeros((64, 1), np.uint8)
    mask[10:20] = 1
    Image.fromarray(mask).save(png)
    # the CAM evaluation pipeline, whose packing fails on the 1-D mask
    ds = _voc(root, pipeline=PIPELINE + [
        dict(type='PackWSSSInputs', pack_seg_map=True)
    ], verify_files=False)  # (the start-up check reads the sizes)
    issues = check_sample(ds.get_data_info(2), SampleSpec(num_classes=21))
    assert [str(i) for i in issues] == [
        f'{jpg}: image is 1x64 px (width x height); the smallest side must '
        'be at least 16 px'
    ]
    # at load time the header sizes stop it before mmcv's 'dim of value
    # must be 2 or 3', naming the sample's files
    with pytest.raises(DatasetCheckError, match='image is 1x64 px') as err:
        ds[2]
    assert f'sample 2 (image {jpg}, mask {png})' in str(err.value)
    # found at start-up from the file headers
    with pytest.raises(DatasetCheckError, match='image is 1x64 px'):
        _voc(root)
    # 16 px passes
    cv2.imwrite(str(jpg), np.full((64, 16, 3), 128, np.uint8))
    Image.fromarray(np.zeros((64, 16), np.uint8) + 1).save(png)
    assert check_sample(ds.get_data_info(2), SampleSpec(num_classes=21)) \
        == []


def test_missing_mask_is_found_at_start_up(root):
    png = root / 'SegmentationClassAug' / 'train_00007.png'
    png.unlink()
    with pytest.raises(DatasetCheckError,
                       match=f'{re.escape(str(png))}: mask file missing'):
        _voc(root)


def test_duplicate_id_is_an_error(root):
    with open(root / SPLIT, 'a') as f:
        f.write('train_00004\n')
    with pytest.raises(DatasetCheckError) as err:
        _voc(root)
    assert _issue_lines(err) == [
        f"{root / SPLIT}: line 17: id 'train_00004' is listed again "
        '(first on line 5)'
    ]


def test_blank_lines_are_ignored_with_a_warning(root, tmp_path):
    names = (root / SPLIT).read_text().split()
    (root / SPLIT).write_text('\n'.join(names[:3]) + '\n\n' +
                              '\n'.join(names[3:]) + '\n\n\n')
    # the run's logger (a Runner makes its own the current instance)
    log_file = tmp_path / 'run.log'
    MMLogger.get_instance(
        f'blank_lines_{tmp_path.name}', log_file=str(log_file),
        log_level='INFO')
    message = r'aug.txt: ignored 3 blank line\(s\) \(line 4, 18, 19\)'
    with pytest.warns(UserWarning, match=message):
        ds = _voc(root)
    assert re.search(f'WARNING - .*{message}', log_file.read_text())
    assert len(ds) == 16
    assert not any(
        ds.get_data_info(i)['img_path'].endswith('JPEGImages/.jpg')
        for i in range(len(ds)))
    split = read_split_file(str(root / SPLIT))
    assert split.blank_lines == [4, 18, 19] and split.issues == []


def test_one_report_lists_every_bad_file(root):
    (root / 'JPEGImages' / 'train_00001.jpg').unlink()
    (root / 'JPEGImages' / 'train_00005.jpg').write_bytes(b'')
    (root / 'SegmentationClassAug' / 'train_00009.png').unlink()
    with open(root / SPLIT, 'a') as f:
        f.write('train_00000\nno_such_image\n')
    labels = root / 'labels.json'
    labels.write_text(json.dumps({'train_00000': [1]}))
    with pytest.raises(DatasetCheckError) as err:
        _voc(root, img_label_file=str(labels))
    lines = _issue_lines(err)
    assert str(err.value).startswith(
        f'WSSSVOCDataset ({root / SPLIT}): 22 problem(s), each with its file')
    for expected in (
            f"{root / SPLIT}: line 17: id 'train_00000' is listed again",
            f'{root}/JPEGImages/train_00001.jpg: image file missing',
            f'{root}/JPEGImages/train_00005.jpg: image file is empty',
            f'{root}/SegmentationClassAug/train_00009.png: mask file missing',
            f'{root}/JPEGImages/no_such_image.jpg: image file missing',
            f'{root}/SegmentationClassAug/no_such_image.png: mask file '
            'missing',
            f"{labels}: image 'train_00015' (listed in {root / SPLIT}) has "
            'no entry in this img_label_file'):
        assert any(line.startswith(expected) for line in lines), expected
    # 5 files, 1 duplicate, 16 images without a label entry
    assert len(err.value.issues) == 22


def test_coco_mask_scan_reports_every_bad_mask(tmp_path):
    root = tmp_path / 'coco'
    (root / 'img').mkdir(parents=True)
    (root / 'seg').mkdir()
    for k, value in enumerate([1, 91, 0, 95]):
        mask = np.zeros((20, 20), np.uint8)
        mask[5:10, 5:10] = value
        Image.fromarray(mask).save(root / 'seg' / f'{k}.png')
        cv2.imwrite(str(root / 'img' / f'{k}.jpg'),
                    np.zeros((20, 20, 3), np.uint8))
    (root / 'seg' / '2.png').write_bytes(b'not a png')

    def build():
        with pytest.raises(DatasetCheckError) as err:
            WSSSCOCODataset(
                data_root=str(root),
                data_prefix=dict(img_path='img', seg_map_path='seg'))
        return _issue_lines(err)

    # the start-up check reads the headers: the unreadable mask first
    lines = build()
    assert len(lines) == 1
    assert lines[0].startswith(f'{root}/seg/2.png: mask header unreadable')
    # then the mask scan (decoding) lists every out-of-range class id
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / 'seg' / '2.png')
    lines = build()
    assert len(lines) == 2
    assert 'found class 91 in' in lines[0] and '1.png' in lines[0]
    assert 'found class 95 in' in lines[1]
    # an empty image folder
    shutil.rmtree(root / 'img')
    (root / 'img').mkdir()
    with pytest.raises(DatasetCheckError, match=r'no \*\.jpg image found'):
        WSSSCOCODataset(
            data_root=str(root),
            data_prefix=dict(img_path='img', seg_map_path='seg'))
