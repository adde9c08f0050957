"""A Runner that reads iterations given as fractions of the run."""
import copy

from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from ...models.utils import iteration_of
from .accumulating_train_loop import (AccumulatingIterBasedTrainLoop,
                                      accumulative_counts)


def resolve_iteration_fractions(cfg: Config) -> Config:
    """Turn the fractional iterations of a config into counts.

    Where a config gives ``begin`` / ``end`` of a parameter scheduler,
    ``train_cfg.val_interval`` or the checkpoint interval as a float in
    [0, 1], it is that fraction of ``train_cfg.max_iters`` (ints stay
    iterations); so ``--cfg-options train_cfg.max_iters=N`` keeps the
    recipe's shape. Loss start iterations are the model's own business
    (``FSRSegmentor.loss_start_iters``).

    Args:
        cfg (Config): A Runner config.

    Returns:
        Config: A copy with iteration counts.
    """
    cfg = copy.deepcopy(cfg)
    max_iters = cfg.train_cfg.max_iters
    for scheduler in cfg.get('param_scheduler') or []:
        for key in ('begin', 'end'):
            if isinstance(scheduler.get(key), float):
                scheduler[key] = iteration_of(scheduler[key], max_iters)
    if isinstance(cfg.train_cfg.get('val_interval'), float):
        cfg.train_cfg.val_interval = max(
            1, iteration_of(cfg.train_cfg.val_interval, max_iters))
    checkpoint = cfg.get('default_hooks', {}).get('checkpoint')
    if checkpoint and isinstance(checkpoint.get('interval'), float):
        checkpoint.interval = max(
            1, iteration_of(checkpoint.interval, max_iters))
    return cfg


def check_accumulating_loop(cfg: Config) -> None:
    """Refuse gradient accumulation in a loop that counts micro-batches.

    mmengine's ``IterBasedTrainLoop`` with ``accumulative_counts=N`` makes
    every micro-batch an iteration: FSR's teacher and centres would move N
    times per optimiser step, with 1/N of its batch, and every schedule
    would run N times too fast. ``AccumulatingIterBasedTrainLoop`` makes
    the iteration the optimiser step.

    Raises:
        ValueError: If ``optim_wrapper.accumulative_counts > 1`` and
            ``train_cfg`` names another loop.
    """
    counts = (cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1)
    loop = (cfg.get('train_cfg') or {}).get('type', 'IterBasedTrainLoop')
    if counts > 1 and loop not in ('AccumulatingIterBasedTrainLoop',
                                   AccumulatingIterBasedTrainLoop):
        raise ValueError(
            f'optim_wrapper.accumulative_counts={counts} needs '
            "train_cfg.type='AccumulatingIterBasedTrainLoop' (got "
            f'{loop!r}, whose iterations are micro-batches: the teacher, '
            'the loss centres and every schedule would step once per '
            'micro-batch)')


@RUNNERS.register_module()
class WSSSRunner(Runner):
    """mmengine's ``Runner``, built from a config whose iterations may be
    fractions of ``max_iters`` (:func:`resolve_iteration_fractions`) and
    whose gradient accumulation, if any, steps once per iteration
    (:func:`check_accumulating_loop`).

    Configs select it with ``runner_type = 'WSSSRunner'``, which mmseg's and
    this project's ``tools/train.py`` honour (``RUNNERS.build``).
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'WSSSRunner':
        """Build the runner from a config with fractions resolved."""
        check_accumulating_loop(cfg)
        return super().from_cfg(resolve_iteration_fractions(cfg))

    def scale_lr(self, optim_wrapper, auto_scale_lr=None) -> None:
        """mmengine's linear lr scaling (``--auto-scale-lr``), with the batch
        of an optimiser step: GPUs x batch size x ``accumulative_counts``."""
        if auto_scale_lr and auto_scale_lr.get('enable', False):
            counts = accumulative_counts(optim_wrapper)
            # mmengine compares GPUs x batch size with base_batch_size
            auto_scale_lr = dict(
                auto_scale_lr,
                base_batch_size=auto_scale_lr['base_batch_size'] / counts)
        super().scale_lr(optim_wrapper, auto_scale_lr)


def build_runner(cfg: Config) -> Runner:
    """The config's runner: ``runner_type`` when it names one (FSR configs:
    ``WSSSRunner``), else mmengine's ``Runner``, as mmseg's tools build it.

    Args:
        cfg (Config): A Runner config.

    Returns:
        Runner: The built runner.
    """
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
