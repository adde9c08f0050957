"""WSSSRunner: fractions of max_iters, and the runner a config names."""
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_fsr.engine import (WSSSRunner, build_runner,
                              resolve_iteration_fractions)
from mmseg_fsr.testing import tiny_fsr_config


def test_fractions_become_iterations_of_the_run():
    cfg = Config(
        dict(
            train_cfg=dict(max_iters=80, val_interval=0.5),
            param_scheduler=[
                dict(type='LinearLR', begin=0, end=0.25),
                dict(type='PolyLR', begin=0.25, end=80)
            ],
            default_hooks=dict(checkpoint=dict(interval=0.01))))
    resolved = resolve_iteration_fractions(cfg)
    assert resolved.train_cfg.val_interval == 40
    spans = [(s.begin, s.end) for s in resolved.param_scheduler]
    assert spans == [(0, 20), (20, 80)]
    assert resolved.default_hooks.checkpoint.interval == 1  # at least one
    assert cfg.train_cfg.val_interval == 0.5  # the config is left as it was


def test_build_runner_honours_runner_type(synthetic_voc, tmp_path):
    cfg = tiny_fsr_config(synthetic_voc, str(tmp_path / 'wsss'))
    assert cfg.runner_type == 'WSSSRunner'
    assert type(build_runner(cfg)) is WSSSRunner
    cfg = tiny_fsr_config(synthetic_voc, str(tmp_path / 'stock'))
    cfg.pop('runner_type')
    assert type(build_runner(cfg)) is Runner
