"""WSSSRunner: fractions of max_iters, and the runner a config names."""
import pytest
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


def test_plain_loop_with_accumulation_is_refused(synthetic_voc, tmp_path):
    """mmengine's IterBasedTrainLoop would step teacher, centres and
    schedules once per micro-batch."""
    cfg = tiny_fsr_config(synthetic_voc, str(tmp_path / 'plain'))
    cfg.optim_wrapper.accumulative_counts = 4
    with pytest.raises(ValueError, match='AccumulatingIterBasedTrainLoop'):
        build_runner(cfg)


@pytest.mark.parametrize('counts, factor', [(1, 2 / 8), (4, 1.0)])
def test_auto_scale_lr_counts_accumulated_images(synthetic_voc, tmp_path,
                                                 counts, factor):
    """--auto-scale-lr: a step of 1 GPU x 2 images x 4 micro-batches is the
    base batch of 8."""
    cfg = tiny_fsr_config(synthetic_voc, str(tmp_path / str(counts)))
    cfg.optim_wrapper.accumulative_counts = counts
    cfg.train_cfg.type = 'AccumulatingIterBasedTrainLoop'
    runner = build_runner(cfg)
    wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    groups = wrapper.optimizer.param_groups
    base = [group['lr'] for group in groups]
    runner.scale_lr(wrapper, dict(enable=True, base_batch_size=8))
    assert [group['lr'] for group in groups] == pytest.approx(
        [lr * factor for lr in base])
