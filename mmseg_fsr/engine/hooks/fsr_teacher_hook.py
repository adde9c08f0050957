"""Keeps the EMA teacher of an ``FSRSegmentor``."""
import math
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class FSRTeacherHook(Hook):
    """EMA teacher update with a cosine momentum schedule.

    After every optimiser step the teacher moves towards the student with
    momentum ``m(t) = end - (end - start) * (1 + cos(pi * t / T)) / 2`` for
    0-based iteration ``t`` of ``T`` (the authors' ``cosine_scheduler``):
    ``start`` at the first iteration, approaching ``end``. Here momentum is
    the weight of the *old* teacher, as in DINO and the paper (0.9995);
    mmengine's EMA classes use the opposite convention. The teacher is part
    of the model, so checkpoints hold it, and the schedule reads
    ``runner.iter``, so it continues where a resumed run stopped.

    Before every iteration it also tells the model where training stands
    (``set_training_progress``), which the loss start iterations, the
    masking warm-up and the teacher temperature read; a model without FSR
    losses (the baseline) needs the hook for that alone.

    Before training it also checks that the model's class count matches the
    training data set's, so that a wrong ``num_classes`` fails at once.

    Args:
        momentum (float): Momentum at the first iteration. Default: 0.9995.
        end_momentum (float): Momentum at the last iteration. Default: 1.0.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, momentum: float = 0.9995,
                 end_momentum: float = 1.0) -> None:
        if not 0 <= momentum <= end_momentum <= 1:
            raise ValueError('need 0 <= momentum <= end_momentum <= 1, got '
                             f'momentum={momentum}, '
                             f'end_momentum={end_momentum}')
        self.momentum = momentum
        self.end_momentum = end_momentum

    def momentum_at(self, cur_iter: int, max_iters: int) -> float:
        """Teacher momentum at 0-based iteration ``cur_iter``."""
        progress = min(1.0, cur_iter / max(max_iters, 1))
        return self.end_momentum - (self.end_momentum - self.momentum) * (
            1 + math.cos(math.pi * progress)) / 2

    @staticmethod
    def _segmentor(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        """Check the model has a teacher and matches the data's classes."""
        model = self._segmentor(runner)
        if not hasattr(model, 'update_teacher'):
            raise TypeError('FSRTeacherHook needs a model with a teacher '
                            f'(FSRSegmentor), got {type(model).__name__}')
        classes = runner.train_dataloader.dataset.metainfo.get('classes')
        if classes is not None and len(classes) != model.num_classes:
            raise ValueError(
                f'wrong class count: the training data has {len(classes)} '
                f'classes (background included), the model '
                f'num_classes={model.num_classes}')

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        """Pass the iteration about to run to the model."""
        self._segmentor(runner).set_training_progress(runner.iter,
                                                      runner.max_iters)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Move the teacher towards the student."""
        model = self._segmentor(runner)
        if model.with_fsr:
            model.update_teacher(
                self.momentum_at(runner.iter, runner.max_iters))
