"""``NonFiniteLossGuardHook``: a diverging run stops with an error naming
the iteration and the loss terms, and never saves its bad state."""
import glob
import math
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub
from mmengine.runner import Runner

from mmseg_fsr.engine.hooks import (LossExplosionError, NonFiniteLossError,
                                    NonFiniteLossGuardHook,
                                    NonFiniteWeightsError,
                                    TrainingDivergedError)


def _diverging_cfg(tiny_cfg, lr, max_loss, with_guard=True):
    cfg = tiny_cfg(max_iters=8)
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=1)
    cfg.custom_hooks = [
        h for h in cfg.custom_hooks if h['type'] != 'NonFiniteLossGuardHook'
    ]
    if with_guard:
        cfg.custom_hooks.append(
            dict(type='NonFiniteLossGuardHook', max_loss=max_loss))
    return cfg


def _checkpoints(work_dir):
    return sorted(glob.glob(osp.join(work_dir, 'iter_*.pth')))


def _all_finite(path):
    state = torch.load(path, map_location='cpu')['state_dict']
    return all(
        torch.isfinite(v).all() for v in state.values()
        if v.is_floating_point())


def _last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


@pytest.mark.parametrize('lr, max_loss, error, message', [
    # lr=1e3, finiteness only: within a few iterations a loss term or
    # (first) a gradient, hence the weights, turn non-finite
    ((1e3, None, (NonFiniteLossError, NonFiniteWeightsError),
      r'non-finite (loss|weights).*iteration \d/8 \(Iter\(train\) '
      r'\[\d/8\]\).*loss=')),
    # lr=10 with the FSR configs' max_loss: ~1e5 at iteration 2
    (10.0, 1e4, LossExplosionError,
     r'loss exploded at iteration 2/8 .*total loss \d+ > max_loss=10000'),
])
def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(
        tiny_cfg, lr, max_loss, error, message):
    cfg = _diverging_cfg(tiny_cfg, lr, max_loss)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(error, match=message) as info:
        runner.train()
    failed_iter = runner.iter + 1
    ckpts = _checkpoints(cfg.work_dir)
    # max_keep_ckpts=1 kept the last good one; none of the bad iteration
    assert ckpts == [osp.join(cfg.work_dir, f'iter_{failed_iter - 1}.pth')]
    assert _all_finite(ckpts[0])
    assert _last_checkpoint(cfg.work_dir) == ckpts[0]
    assert f'The last checkpoint on disk is {ckpts[0]}' in str(info.value)
    assert isinstance(info.value, TrainingDivergedError)
    assert isinstance(info.value, FloatingPointError)


def test_without_the_guard_nan_checkpoints_replace_the_good_ones(tiny_cfg):
    """The fault the guard fixes (mmengine alone)."""
    cfg = _diverging_cfg(tiny_cfg, 1e3, None, with_guard=False)
    Runner.from_cfg(cfg).train()  # no error, exit code 0
    ckpts = _checkpoints(cfg.work_dir)
    assert ckpts == [osp.join(cfg.work_dir, 'iter_8.pth')]
    assert _last_checkpoint(cfg.work_dir) == ckpts[0]
    assert not _all_finite(ckpts[0])


def test_guard_runs_before_the_checkpoint_hook(tiny_cfg):
    runner = Runner.from_cfg(tiny_cfg())
    names = [type(h).__name__ for h in runner.hooks]
    checkpoint_hook = next(
        i for i, h in enumerate(runner.hooks) if isinstance(h, CheckpointHook))
    assert names.index('NonFiniteLossGuardHook') < checkpoint_hook
    assert names.index('NonFiniteLossGuardHook') < names.index(
        'FSRTeacherHook')
    assert names.index('NonFiniteLossGuardHook') < names.index(
        'RuntimeInfoHook')


# --- the hook alone, on a fake runner --------------------------------------

def _runner(model=None, it=4, max_iters=10, last_ckpt=None):
    hub = MessageHub.get_instance('test_non_finite_loss_guard')
    hub.update_info('last_ckpt', last_ckpt)
    return SimpleNamespace(
        model=model or torch.nn.Linear(2, 2), iter=it, max_iters=max_iters,
        message_hub=hub, work_dir='/work')


def _losses(**values):
    out = {k: torch.tensor(v) for k, v in values.items()}
    out['acc_seg'] = torch.tensor(math.nan)  # not a loss: never checked
    return out


def test_finite_losses_pass():
    hook = NonFiniteLossGuardHook(max_loss=100)
    hook.after_train_iter(_runner(), 0, outputs=_losses(loss=3.0, loss_a=3.0))
    hook.after_train_iter(_runner(), 0, outputs=None)


def test_error_names_iteration_and_non_finite_terms():
    hook = NonFiniteLossGuardHook()
    with pytest.raises(NonFiniteLossError) as info:
        hook.after_train_iter(
            _runner(it=4, last_ckpt='/work/iter_4.pth'), 0,
            outputs=_losses(loss=math.inf, loss_a=1.0, loss_b=math.inf))
    msg = str(info.value)
    assert 'iteration 5/10' in msg
    assert 'non-finite: loss, loss_b;' in msg and 'loss_a=1' in msg
    assert 'acc_seg' not in msg
    assert 'The last checkpoint on disk is /work/iter_4.pth' in msg
    with pytest.raises(NonFiniteLossError, match='No checkpoint had been'):
        hook.after_train_iter(_runner(), 0, outputs=_losses(loss=math.nan))


def test_explosion_threshold_is_optional():
    NonFiniteLossGuardHook().after_train_iter(
        _runner(), 0, outputs=_losses(loss=7e12))
    with pytest.raises(LossExplosionError, match='7e\\+12 > max_loss=10000'):
        NonFiniteLossGuardHook(max_loss=1e4).after_train_iter(
            _runner(), 0, outputs=_losses(loss=7e12))
    with pytest.raises(ValueError):
        NonFiniteLossGuardHook(max_loss=0)


def test_non_finite_weights_with_a_finite_loss():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[1].bias[0] = math.nan
    hook = NonFiniteLossGuardHook(check_weights=True)
    with pytest.raises(NonFiniteWeightsError, match=r'1\.bias'):
        hook.after_train_iter(_runner(model), 0, outputs=_losses(loss=1.0))
    NonFiniteLossGuardHook(check_weights=False).after_train_iter(
        _runner(model), 0, outputs=_losses(loss=1.0))
    # 'auto': only where a checkpoint is saved or validation runs
    auto = NonFiniteLossGuardHook()
    runner = _runner(model, it=3)
    runner.hooks = [CheckpointHook(interval=5, by_epoch=False)]
    auto.after_train_iter(runner, 0, outputs=_losses(loss=1.0))
    runner.iter = 4  # iter_5.pth is about to be written
    with pytest.raises(NonFiniteWeightsError):
        auto.after_train_iter(runner, 0, outputs=_losses(loss=1.0))
    runner = _runner(model, it=5)
    runner.val_loop = object()
    runner.train_loop = SimpleNamespace(val_interval=3, val_begin=1)
    with pytest.raises(NonFiniteWeightsError):  # validation after iter 6
        auto.after_train_iter(runner, 0, outputs=_losses(loss=1.0))
    with pytest.raises(ValueError):
        NonFiniteLossGuardHook(check_weights='always')
    # last line of defence: a non-finite checkpoint is never written
    with pytest.raises(NonFiniteWeightsError, match='was not written'):
        hook.before_save_checkpoint(
            _runner(model), dict(state_dict=model.state_dict()))
    hook.before_save_checkpoint(
        _runner(), dict(state_dict=torch.nn.Linear(2, 2).state_dict()))


def test_all_ranks_stop_together(monkeypatch):
    """A NaN on another rank stops this (healthy) rank at the same
    iteration, instead of leaving it hanging in the next all-reduce."""
    import mmseg_fsr.engine.hooks.non_finite_loss_guard_hook as guard

    def all_reduce(flags, op):
        assert op == 'sum'
        flags[0] += 1  # rank 0 saw a non-finite loss

    monkeypatch.setattr(guard, 'is_distributed', lambda: True)
    monkeypatch.setattr(guard, 'get_rank', lambda: 1)
    monkeypatch.setattr(guard, 'all_reduce', all_reduce)
    with pytest.raises(NonFiniteLossError,
                       match='iteration 5/10 .* on rank 1: finite here, '
                       'non-finite on another rank'):
        NonFiniteLossGuardHook().after_train_iter(
            _runner(), 0, outputs=_losses(loss=1.0))
