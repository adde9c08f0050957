"""Image-label files are read without running code from them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.registry import init_default_scope

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.datasets import DatasetCheckError, WSSSVOCDataset
from mmseg_fsr.datasets.transforms import (UnsafeLabelFileError,
                                           load_image_label_file,
                                           save_image_label_file)

REPO = Path(__file__).resolve().parents[2]
CONVERTER = REPO / 'tools' / 'dataset_converters' / 'convert_image_labels.py'


class WritesAFile:
    """Unpickling this calls ``open(path, 'w')``: a stand-in for any code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


class RunsShell:

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f'touch {self.path}', )


class RunsExec:

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return exec, (f'open({self.path!r}, "w").close()', )


def _onehot(*hot):
    vec = np.zeros(20, np.uint8)
    vec[list(hot)] = 1
    return vec


@pytest.mark.parametrize('payload', [WritesAFile, RunsShell, RunsExec])
@pytest.mark.parametrize('nested', [False, True])
def test_code_running_npy_is_refused_before_it_runs(tmp_path, payload,
                                                    nested):
    marker = tmp_path / 'pwned'
    evil = payload(str(marker))
    content = {'a': _onehot(1), 'b': [evil]} if nested else evil
    path = str(tmp_path / 'cls_labels_onehot.npy')
    np.save(path, np.array(content, dtype=object), allow_pickle=True)
    # the payload really runs under a plain pickle load
    np.load(path, allow_pickle=True)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UnsafeLabelFileError,
                       match=r'cls_labels_onehot\.npy: refused to load it, '
                       r'its pickle data refers to (builtins|io)\.open|'
                       r'posix\.system|builtins\.exec'):
        load_image_label_file(path, 21)
    assert not marker.exists()


def test_code_running_label_file_through_the_dataset(tmp_path,
                                                     synthetic_voc):
    init_default_scope('mmseg')
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'labels.npy')
    np.save(path, {'train_00000': WritesAFile(str(marker))},
            allow_pickle=True)
    with pytest.raises(DatasetCheckError, match='refused to load it'):
        WSSSVOCDataset(
            data_root=synthetic_voc,
            data_prefix=dict(
                img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
            ann_file='ImageSets/Segmentation/aug.txt',
            img_label_file=path)
    assert not marker.exists()


def test_authors_pickled_dict_npy_still_loads(tmp_path):
    """``np.save(path, dict)`` as in the WSSS authors' repositories, with
    the value types such files hold."""
    path = str(tmp_path / 'cls_labels_onehot.npy')
    np.save(path, {
        '2007_000032': _onehot(0, 14),
        '2007_000039': _onehot(19).astype(np.float32),
        '2007_000063': [0] * 8 + [1] + [0] * 10 + [np.float64(1)],
    })
    labels = load_image_label_file(path, 21)
    assert sorted(labels) == ['2007_000032', '2007_000039', '2007_000063']
    assert np.flatnonzero(labels['2007_000032']).tolist() == [0, 14]
    assert np.flatnonzero(labels['2007_000063']).tolist() == [8, 19]
    assert all(v.dtype == np.float32 for v in labels.values())


def test_npz_and_json_are_pickle_free(tmp_path):
    labels = {'a': _onehot(2), 'file': _onehot(0, 5)}  # 'file': no clash
    for suffix in ('npz', 'json'):
        path = str(tmp_path / f'labels.{suffix}')
        save_image_label_file(path, labels)
        loaded = load_image_label_file(path, 21)
        assert loaded.keys() == labels.keys()
        for name, vec in labels.items():
            np.testing.assert_array_equal(loaded[name], vec)
    with np.load(str(tmp_path / 'labels.npz'), allow_pickle=False) as npz:
        assert sorted(npz.files) == ['a', 'file']
    assert json.loads((tmp_path / 'labels.json').read_text()) == {
        'a': [3], 'file': [1, 6]}

    pickled = str(tmp_path / 'pickled.npz')
    np.savez(pickled, a=np.array([WritesAFile('x')], dtype=object))
    with pytest.raises(UnsafeLabelFileError, match='pickled.npz'):
        load_image_label_file(pickled, 21)


@pytest.mark.parametrize('name, content, message', [
    ('bad.json', '{"a": [1,', r'bad\.json is not valid JSON'),
    ('ids.json', '{"a": "1"}', r"ids\.json: entry 'a' must be a list"),
    ('bad.npy', 'not numpy', r'bad\.npy is not a valid \.npy file'),
    ('bad.npz', 'not a zip', r'bad\.npz is not a valid \.npz file'),
    ('labels.txt', 'a 1', r'labels\.txt must be a \.npy, \.npz or \.json'),
])
def test_malformed_label_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_image_label_file(str(path), 21)


def test_converter(tmp_path):
    src = str(tmp_path / 'cls_labels_onehot.npy')
    np.save(src, {'x': _onehot(3), 'y': _onehot(0, 19)})
    for dst in ('out.json', 'out.npz'):
        res = subprocess.run(
            [sys.executable, str(CONVERTER), src,
             str(tmp_path / dst)],
            capture_output=True, text=True, cwd=REPO)
        assert res.returncode == 0, res.stderr
        assert 'wrote 2 image labels' in res.stdout
        out = load_image_label_file(str(tmp_path / dst), 21)
        assert np.flatnonzero(out['y']).tolist() == [0, 19]
    evil = str(tmp_path / 'evil.npy')
    np.save(evil, {'x': WritesAFile(str(tmp_path / 'pwned'))})
    res = subprocess.run(
        [sys.executable, str(CONVERTER), evil,
         str(tmp_path / 'e.json')],
        capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1 and 'refused to load it' in res.stderr
    assert not (tmp_path / 'pwned').exists()
