"""A checkpoint that does not fit the model stops every command that scores
it or predicts with it (tools/test.py, the export and CAM tools,
init_model, the inferencer), naming the keys and both shapes; the
explicit opt-in loads what fits."""
import importlib.util
import os.path as osp
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmseg.registry import MODELS

from mmseg_fsr.apis import StrictSegInferencer, init_model
from mmseg_fsr.testing import tiny_fsr_config
from mmseg_fsr.utils import (CheckpointMismatchError, checkpoint_fit,
                             load_checkpoint_strict)

REPO = Path(__file__).resolve().parents[2]
SEG_KEY = 'decode_head.conv_seg.weight'


def _tool_main(rel_path, argv):
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(rel_path))[0], REPO / rel_path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.main(argv)


@pytest.fixture(scope='module')
def run(synthetic_voc, tmp_path_factory):
    """The tiny config file, a checkpoint that fits, one whose classifier
    has 5 classes instead of 21, and one with no key of the model."""
    work = tmp_path_factory.mktemp('fit')
    cfg = tiny_fsr_config(synthetic_voc, str(work / 'work'), max_iters=1)
    config = str(work / 'tiny.py')
    cfg.dump(config)
    torch.manual_seed(0)
    state = MODELS.build(cfg.model).state_dict()
    paths = {}
    wrong_shape = dict(state)
    wrong_shape[SEG_KEY] = state[SEG_KEY][:5].clone()
    for name, weights in (('good', state), ('wrong_shape', wrong_shape),
                          ('foreign', {'fc.weight': torch.zeros(3, 3)})):
        paths[name] = str(work / f'{name}.pth')
        torch.save(dict(state_dict=weights, meta=dict()), paths[name])
    return config, paths, state


def test_checkpoint_fit_lists_keys_and_shapes():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    state = {f'module.{k}': v for k, v in model.state_dict().items()}
    del state['module.1.num_batches_tracked']  # optional, as in mmengine
    assert checkpoint_fit(model, dict(state_dict=state)).fits
    state['module.0.weight'] = torch.zeros(3, 5)
    del state['module.1.running_var']
    state['extra'] = torch.zeros(1)
    fit = checkpoint_fit(model, state)
    assert fit.mismatched == [('0.weight', (3, 5), (3, 4))]
    assert fit.missing == ['1.running_var']
    assert fit.unexpected == ['extra']


def test_test_tool_refuses_a_checkpoint_of_other_shapes(run, tmp_path):
    config, paths, state = run
    with pytest.raises(CheckpointMismatchError) as err:
        _tool_main('tools/test.py', [
            config, paths['wrong_shape'], '--work-dir', str(tmp_path)])
    message = str(err.value)
    assert paths['wrong_shape'] in message
    assert f'{SEG_KEY}: (5, 16, 1, 1) vs (21, 16, 1, 1)' in message
    assert '--allow-partial-checkpoint' in message


def test_test_tool_refuses_a_checkpoint_without_model_keys(run, tmp_path):
    config, paths, state = run
    with pytest.raises(CheckpointMismatchError,
                       match=f'{len(state)} missing key') as err:
        _tool_main('tools/test.py',
                   [config, paths['foreign'], '--work-dir', str(tmp_path)])
    assert 'backbone.cls_token' in str(err.value)


def test_test_tool_scores_a_partial_checkpoint_when_asked(run, tmp_path):
    config, paths, _ = run
    _tool_main('tools/test.py', [
        config, paths['wrong_shape'], '--work-dir', str(tmp_path),
        '--allow-partial-checkpoint'
    ])
    assert list(tmp_path.glob('*/*.json'))  # scored


@pytest.mark.parametrize('tool', [
    'tools/export_pseudo_labels.py', 'tools/analysis_tools/visualize_cams.py'
])
def test_cam_tools_refuse_a_checkpoint_of_other_shapes(run, tmp_path, tool):
    config, paths, _ = run
    with pytest.raises(CheckpointMismatchError,
                       match='--allow-partial-checkpoint'):
        _tool_main(tool, [config, paths['wrong_shape'], '--split', 'val',
                          '--out-dir', str(tmp_path), '--device', 'cpu'])


def test_init_model_and_inferencer_refuse_and_opt_in(run):
    config, paths, state = run
    with pytest.raises(CheckpointMismatchError, match=SEG_KEY):
        init_model(config, paths['wrong_shape'], device='cpu')
    with pytest.raises(CheckpointMismatchError, match='allow_partial=True'):
        StrictSegInferencer(model=config, weights=paths['wrong_shape'],
                            device='cpu')
    model = init_model(config, paths['good'], device='cpu')
    assert all(torch.equal(v, state[k])
               for k, v in model.state_dict().items())
    partial = init_model(config, paths['wrong_shape'], device='cpu',
                         allow_partial=True)
    assert partial.state_dict()[SEG_KEY].shape == (21, 16, 1, 1)
    inferencer = StrictSegInferencer(model=config, weights=paths['good'],
                                     device='cpu')
    assert torch.equal(inferencer.model.state_dict()[SEG_KEY], state[SEG_KEY])


def test_load_checkpoint_strict_through_a_wrapper(run):
    config, paths, state = run
    from mmengine.config import Config
    model = MODELS.build(Config.fromfile(config).model)
    wrapped = nn.DataParallel(model)
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint_strict(wrapped, paths['foreign'])
    load_checkpoint_strict(wrapped, paths['good'])
    assert torch.equal(model.state_dict()[SEG_KEY], state[SEG_KEY])
