"""tools/train.py on user mistakes and a full disk: each one stops at once,
naming what is wrong, and nothing trained is lost (rows of docs/faults.md)."""
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


@pytest.fixture
def config(synthetic_voc, tmp_path):
    path = str(tmp_path / 'tiny.py')
    tiny_fsr_config(synthetic_voc, str(tmp_path / 'work')).dump(path)
    return path


def test_missing_data_root(config, tmp_path):
    missing = str(tmp_path / 'no_data')
    with pytest.raises(FileNotFoundError,
                       match=f'WSSSVOCDataset: data_root not found: '
                       f'{missing}'):
        _train_main([config, '--data-root', missing])


def test_missing_pretrained_weights(synthetic_voc, tmp_path):
    missing = str(tmp_path / 'pretrain' / 'vit.pth')
    cfg = tiny_fsr_config(synthetic_voc, str(tmp_path / 'work'))
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=missing)
    config = str(tmp_path / 'pretrained.py')
    cfg.dump(config)
    with pytest.raises(FileNotFoundError) as err:
        _train_main([config])
    assert missing in str(err.value)
    assert 'tools/model_converters/vit_to_fsr.py' in str(err.value)
    assert not list((tmp_path / 'work').glob('iter_*.pth'))


def test_wrong_class_count(config, tmp_path):
    """A 21-class model on a data set of 5 classes."""
    with pytest.raises(ValueError,
                       match='wrong class count: the training data has 5 '
                       'classes .*num_classes=21'):
        _train_main([
            config, '--cfg-options',
            'train_dataloader.dataset.metainfo.classes='
            'background,aeroplane,bicycle,bird,boat'
        ])


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
def test_amp_needs_a_gpu(config, device, monkeypatch, capsys):
    """--amp without a GPU stops before the config is read, saying to train
    in fp32; with one, it gets past the check."""
    import mmengine.device
    for name in ('is_cuda_available', 'is_npu_available', 'is_mlu_available',
                 'is_musa_available'):
        monkeypatch.setattr(mmengine.device, name,
                            lambda gpu=name == f'is_{device}_available': gpu)
    if device == 'cuda':
        # stops at the next step instead: the missing data folder
        with pytest.raises(FileNotFoundError, match='data_root not found'):
            _train_main([config, '--amp', '--data-root', 'no_data'])
        return
    with pytest.raises(SystemExit) as err:
        _train_main([config, '--amp'])
    assert err.value.code == 2
    message = ' '.join(capsys.readouterr().err.split())
    assert '--amp needs a GPU' in message
    assert 'On CPU, train in fp32: the same command without --amp' in message


# ---------------------------------- a failed save (AtomicCheckpointHook)
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
