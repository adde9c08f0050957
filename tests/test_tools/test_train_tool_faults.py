"""tools/train.py on user mistakes: each one stops at once, naming what is
wrong (rows of docs/faults.md)."""
import importlib.util
from pathlib import Path

import pytest

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
