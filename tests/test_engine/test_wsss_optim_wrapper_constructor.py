"""Tests of ``WSSSOptimWrapperConstructor``: mmengine's groups with the
decay rules kept under custom keys, logged as one table."""
import logging
import os.path as osp
import uuid

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.engine.optimizers import WSSSOptimWrapperConstructor
from mmseg_fsr.testing import tiny_fsr_model_cfg

SCHEDULE = osp.join(
    osp.dirname(__file__), '..', '..', 'configs', '_base_', 'schedules',
    'fsr_20k.py')
TOCO = dict(mask_neck=None, aggregation_head=None, uncertain_loss=None,
            certain_loss=None)
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


class _Records(logging.Handler):

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def log():
    """Messages of a fresh current MMLogger (INFO and up)."""
    logger = MMLogger.get_instance(f'optim_{uuid.uuid4().hex}',
                                   log_level='INFO')
    records = _Records()
    logger.addHandler(records)
    yield records.messages
    logger.removeHandler(records)


def _model(overrides):
    init_default_scope('mmseg')
    return MODELS.build(tiny_fsr_model_cfg(32, **overrides))


def _per_param(constructor, model) -> dict:
    """name -> (lr, weight_decay), in group order."""
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = constructor(model).optimizer
    return {
        names[id(p)]: (group['lr'], group['weight_decay'])
        for group in optimizer.param_groups for p in group['params']
    }


@pytest.mark.parametrize('overrides', [{}, TOCO], ids=['fsr', 'toco'])
def test_groups_are_mmengines_with_decay_rules_under_custom_keys(overrides):
    optim = Config.fromfile(SCHEDULE).optim_wrapper
    optim.pop('constructor')
    paramwise = optim.pop('paramwise_cfg')
    model = _model(overrides)
    ours = _per_param(
        WSSSOptimWrapperConstructor(optim, paramwise), model)
    default = _per_param(
        DefaultOptimWrapperConstructor(optim, paramwise), model)
    assert list(ours) == list(default)  # same tensors, same order
    assert not any(name.startswith('teacher.') for name in ours)

    # mmengine's lr and decay, except the rules kept under custom keys that
    # set no decay_mult (the heads' biases and norms)
    base_wd = optim.optimizer.weight_decay
    expected = dict(default)
    for mod_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full_name = f'{mod_name}.{name}' if mod_name else name
            keys = [k for k in paramwise.custom_keys if k in f'.{full_name}']
            if full_name not in expected or not keys or \
                    'decay_mult' in paramwise.custom_keys[max(keys, key=len)]:
                continue
            if isinstance(module, NORMS):
                mult = paramwise.norm_decay_mult
            elif name == 'bias':
                mult = paramwise.bias_decay_mult
            elif param.ndim == 1:
                mult = paramwise.flat_decay_mult
            else:
                continue
            expected[full_name] = (expected[full_name][0], base_wd * mult)
    assert ours == expected
    if not overrides:  # the projector's biases keep bias_decay_mult
        assert ours != default
    assert {lr for lr, _ in ours.values()} == {6e-5, 6e-5 * 10}


def test_one_table_instead_of_a_line_per_parameter(log):
    cfg = Config.fromfile(SCHEDULE).optim_wrapper
    cfg.pop('constructor')
    paramwise = cfg.pop('paramwise_cfg')
    model = _model({})

    WSSSOptimWrapperConstructor(cfg, paramwise)(model)
    assert not [m for m in log if 'paramwise_options' in m]
    [table] = [m for m in log if m.startswith('Parameter groups:')]
    # mmengine's warnings still pass
    assert any('requires_grad=False' in m for m in log)
    rows = [line.split('|')[1:-1] for line in table.splitlines()
            if line.startswith('|')]
    header, rows = rows[0], {r[0].strip(): r[1:] for r in rows[1:]}
    assert [h.strip() for h in header] == [
        'group', 'tensors', 'params', 'lr', 'weight_decay']
    assert rows['decode_head'][2:] == rows['cam_head'][2:]
    assert [v.strip() for v in rows['decode_head'][2:]] == ['0.0006', '0.05']
    assert [v.strip() for v in rows['default / norm'][2:]] == ['6e-05', '0']
    assert [v.strip() for v in rows['pos_embed'][2:]] == ['6e-05', '0']
    # every trained tensor counted once
    trained = [p for n, p in model.named_parameters()
               if p.requires_grad and not n.startswith('teacher.')]
    assert sum(int(r[0]) for r in rows.values()) == len(trained)
    assert sum(int(r[1].replace(',', '')) for r in rows.values()) == sum(
        p.numel() for p in trained)

    # the filter is gone afterwards: mmengine's own constructor still logs
    # its lines to the same logger
    log.clear()
    DefaultOptimWrapperConstructor(cfg, paramwise)(model)
    assert [m for m in log if m.startswith('paramwise_options')]
