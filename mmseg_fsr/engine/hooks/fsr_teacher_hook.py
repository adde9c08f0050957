"""Moves the EMA teacher of an ``FSRSegmentor`` right after each step."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class FSRTeacherHook(Hook):
    """Fold the student into the EMA teacher after every optimiser step.

    The teacher, its momentum schedule (``FSRSegmentor.teacher_cfg``) and
    the record of the last step folded in are the model's, and the model
    catches up by itself at the next step's first forward, so training is
    the same with and without this hook. With it the teacher moves right
    after the step (``FSRSegmentor.advance_teacher``): a checkpoint saved
    after step ``t``, and any hook that runs after it, hold the teacher of
    step ``t`` rather than ``t - 1``. A model without a teacher (the
    ``WSSSSegmentor`` baseline, FSR losses off) is left alone.
    """

    priority = 'ABOVE_NORMAL'  # before CheckpointHook saves the step

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Move the teacher towards the student of the step just done."""
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if hasattr(model, 'advance_teacher'):
            model.advance_teacher(runner.iter, runner.max_iters)
