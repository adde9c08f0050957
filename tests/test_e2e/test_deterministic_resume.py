"""Crash and resume through the real Runner: bit-identical to no crash.

A tiny config runs 6 iterations, a checkpoint and a validation every 2
(3 checkpoints). A second run is killed during iteration 5 (a hook raises
after checkpoint 2 was written), then resumed from ``iter_4.pth``. Every
state-dict tensor (student, EMA teacher, loss centers), the optimiser state
and the final metrics must equal those of the uninterrupted run. With
gradient accumulation (``AccumulatingIterBasedTrainLoop``) an iteration is
an optimiser step of several batches, and the resumed run restarts at a
step boundary.
"""
import copy
import glob
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmseg_fsr.datasets import WSSSVOCDataset


class Crash(Exception):
    pass


class CrashAt(Hook):
    """Raises in ``after_train_iter`` of 0-based iteration ``at``, after the
    checkpoint hooks of that iteration (a kill mid-run)."""

    priority = 'LOWEST'

    def __init__(self, at: int):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == self.at:
            raise Crash(f'killed in iteration {self.at + 1}')


def _cfg(tiny_cfg, work_dir, num_workers=0, with_hook=True,
         accumulative_counts=1):
    cfg = tiny_cfg(max_iters=6)
    if accumulative_counts > 1:
        cfg.train_cfg.type = 'AccumulatingIterBasedTrainLoop'
        cfg.optim_wrapper.accumulative_counts = accumulative_counts
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.val_interval = 2  # validation between checkpoints too
    cfg.default_hooks.checkpoint.update(interval=2, max_keep_ckpts=-1)
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    if num_workers:
        cfg.train_dataloader.update(
            num_workers=num_workers, persistent_workers=True)
    if not with_hook:
        cfg.custom_hooks = [
            h for h in cfg.custom_hooks
            if h['type'] != 'DeterministicResumeHook'
        ]
    return cfg


def _run(cfg, resume_from=None, crash_at=None):
    cfg = copy.deepcopy(cfg)
    if resume_from:
        cfg.resume = True
        cfg.load_from = resume_from
    runner = Runner.from_cfg(cfg)
    if crash_at is not None:
        runner.register_hook(CrashAt(crash_at))
    metrics = {}

    class KeepMetrics(Hook):
        def after_val_epoch(self, runner, metrics=None):
            keep.update(metrics or {})

    keep = metrics
    runner.register_hook(KeepMetrics())
    runner.train()
    state = {
        k: v.detach().clone()
        for k, v in runner.model.state_dict().items()
    }
    optim = runner.optim_wrapper.state_dict()
    return state, optim, metrics


def _assert_same_optim(a, b):
    for pa, pb in zip(a['state'].values(), b['state'].values()):
        for key in pa:
            if torch.is_tensor(pa[key]):
                assert torch.equal(pa[key], pb[key]), key


def _crash_and_resume(cfg, tmp_path):
    with pytest.raises(Crash):
        _run(cfg, crash_at=4)
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_4.pth'))
    assert not osp.isfile(osp.join(cfg.work_dir, 'iter_6.pth'))
    return _run(cfg, resume_from=osp.join(cfg.work_dir, 'iter_4.pth'))


@pytest.mark.parametrize('num_workers, counts', [(0, 1), (1, 1), (0, 2)],
                         ids=['main-process', 'worker', 'accumulation'])
def test_resume_is_bit_identical(tiny_cfg, tmp_path, monkeypatch,
                                 num_workers, counts):
    full_state, full_optim, full_metrics = _run(
        _cfg(tiny_cfg, tmp_path / 'full', num_workers,
             accumulative_counts=counts))
    loaded = []
    prepare = WSSSVOCDataset.prepare_data

    def counting(self, idx):
        loaded.append(osp.basename(self.get_data_info(idx)['img_path']))
        return prepare(self, idx)

    monkeypatch.setattr(WSSSVOCDataset, 'prepare_data', counting)
    state, optim, metrics = _crash_and_resume(
        _cfg(tiny_cfg, tmp_path / 'crash', num_workers,
             accumulative_counts=counts), tmp_path)
    if num_workers == 0:
        # iterations 1-5 of the killed run, then only iterations 5-6 on
        # resume: the 4 x counts batches already trained were skipped
        # unread
        assert len([n for n in loaded if n.startswith('train_')]) == \
            (5 + 2) * counts * 2

    assert full_state.keys() == state.keys()
    assert any(k.startswith('teacher.') for k in state)
    different = [k for k in full_state if not torch.equal(full_state[k],
                                                          state[k])]
    assert different == []
    _assert_same_optim(full_optim, optim)
    assert full_metrics and metrics == full_metrics


def test_without_the_hook_resume_differs(tiny_cfg, tmp_path):
    """The fault the hook fixes: mmengine alone resumes with the wrong
    random state (same data order, different random draws)."""
    full_state, _, _ = _run(_cfg(tiny_cfg, tmp_path / 'full',
                                 with_hook=False))
    state, _, _ = _crash_and_resume(
        _cfg(tiny_cfg, tmp_path / 'crash', with_hook=False), tmp_path)
    assert any(not torch.equal(full_state[k], state[k]) for k in full_state)


def test_checkpoint_is_marked_and_loads_weights_only(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, tmp_path / 'w')
    cfg.train_cfg.update(max_iters=2, val_interval=100)
    _run(cfg)
    ckpt = torch.load(osp.join(cfg.work_dir, 'iter_2.pth'),
                      map_location='cpu', weights_only=True)
    mark = ckpt['meta']['deterministic_resume']
    assert mark == dict(version=1, seed=0, batch_size=2, num_workers=0,
                        world_size=1)

    # resumed with another batch size and worker count: a warning with the
    # old and new values, in the run's log file
    cfg.train_cfg.max_iters = 3
    cfg.train_dataloader.update(batch_size=4, num_workers=1,
                                persistent_workers=False)
    _run(cfg, resume_from=osp.join(cfg.work_dir, 'iter_2.pth'))
    logs = sorted(glob.glob(osp.join(cfg.work_dir, '*', '*.log')))
    with open(logs[-1]) as f:
        log = f.read()
    assert 'resumed with batch_size 2 -> 4, num_workers 0 -> 1 ' \
        '(checkpoint -> now)' in log
    assert 'world_size' not in log  # unchanged


def test_resuming_an_unmarked_checkpoint_warns(monkeypatch):
    import mmseg_fsr.engine.hooks.deterministic_resume_hook as module
    logged = []
    monkeypatch.setattr(module, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    hook = module.DeterministicResumeHook()
    runner = SimpleNamespace(seed=3, iter=4, train_loop=SimpleNamespace(
        dataloader_iterator=iter(range(10))))
    hook.after_load_checkpoint(runner, dict(meta=dict(iter=4)))
    hook.before_train(runner)
    assert any('written without this hook' in m for m in logged)
    logged.clear()
    hook.after_load_checkpoint(
        runner, dict(meta=dict(iter=4, deterministic_resume=dict(seed=3))))
    hook.before_train(runner)
    assert logged == []
