"""AtomicCheckpointHook: a save that fails (full disk) keeps the last
complete checkpoint, ``last_checkpoint`` names it, and ``--resume``
continues from it (real Runner, tools/train.py, tiny config)."""
import errno
import importlib.util
import os.path as osp
from pathlib import Path

import pytest
import torch
from mmengine.fileio import LocalBackend

from mmseg_fsr.testing import tiny_fsr_config

REPO = Path(__file__).resolve().parents[2]


def _train_main(argv):
    spec = importlib.util.spec_from_file_location('fsr_tools_train',
                                                  REPO / 'tools' / 'train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.main(argv)


def _config(synthetic_voc, tmp_path, hook_type):
    cfg = tiny_fsr_config(synthetic_voc, str(tmp_path / 'work'), max_iters=6)
    cfg.default_hooks.checkpoint.update(
        type=hook_type, interval=2, max_keep_ckpts=1)
    path = str(tmp_path / 'tiny.py')
    cfg.dump(path)
    return path, cfg.work_dir


@pytest.fixture
def disk_full_at_iter_4(monkeypatch):
    """The disk fills up half-way through writing the iteration-4 save."""
    put = LocalBackend.put

    def failing_put(self, obj, filepath):
        if 'iter_4' in osp.basename(str(filepath)):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(errno.ENOSPC, 'No space left on device',
                          str(filepath))
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', failing_put)


def _last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def test_fsr_configs_save_atomically(tiny_cfg):
    assert tiny_cfg().default_hooks.checkpoint.type == 'AtomicCheckpointHook'


def test_mmengine_hook_loses_the_only_checkpoint(synthetic_voc, tmp_path,
                                                 disk_full_at_iter_4):
    """The fault, reproduced with mmengine's CheckpointHook."""
    config, work_dir = _config(synthetic_voc, tmp_path, 'CheckpointHook')
    with pytest.raises(OSError, match='No space left'):
        _train_main([config])
    # deleted before the new one was written, yet named by last_checkpoint
    named = _last_checkpoint(work_dir)
    assert named == osp.join(work_dir, 'iter_2.pth')
    assert not osp.exists(named)
    with pytest.raises(Exception):  # what is left is truncated
        torch.load(osp.join(work_dir, 'iter_4.pth'), map_location='cpu')


def test_failed_save_keeps_the_last_checkpoint_and_resume_continues(
        synthetic_voc, tmp_path, disk_full_at_iter_4, monkeypatch):
    config, work_dir = _config(synthetic_voc, tmp_path,
                               'AtomicCheckpointHook')
    with pytest.raises(OSError, match='No space left') as err:
        _train_main([config])
    good = osp.join(work_dir, 'iter_2.pth')
    assert 'iter_4.pth was not written' in str(err.value.__notes__)
    assert good in str(err.value.__notes__)
    assert sorted(p.name for p in Path(work_dir).iterdir()
                  if p.suffix in ('.pth', '.part')) == ['iter_2.pth']
    assert _last_checkpoint(work_dir) == good
    assert torch.load(good, map_location='cpu')['meta']['iter'] == 2

    monkeypatch.undo()  # space freed
    _train_main([config, '--resume'])
    assert _last_checkpoint(work_dir) == osp.join(work_dir, 'iter_6.pth')
    # max_keep_ckpts=1: the older ones go once the new one is complete
    assert sorted(p.name for p in Path(work_dir).glob('*.pth')) == [
        'iter_6.pth'
    ]
    final = torch.load(osp.join(work_dir, 'iter_6.pth'), map_location='cpu')
    assert final['meta']['iter'] == 6
    hub = final['message_hub']['runtime_info']
    assert hub['keep_ckpt_ids'] == [6]
