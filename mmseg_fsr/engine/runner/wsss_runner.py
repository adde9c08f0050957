"""A Runner that reads iterations given as fractions of the run."""
import copy

from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from ...models.utils import iteration_of


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


@RUNNERS.register_module()
class WSSSRunner(Runner):
    """mmengine's ``Runner``, built from a config whose iterations may be
    fractions of ``max_iters`` (:func:`resolve_iteration_fractions`).

    Configs select it with ``runner_type = 'WSSSRunner'``, which mmseg's and
    this project's ``tools/train.py`` honour (``RUNNERS.build``).
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'WSSSRunner':
        """Build the runner from a config with fractions resolved."""
        return super().from_cfg(resolve_iteration_fractions(cfg))


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
