"""An iteration-based training loop whose iteration is one optimiser step
made of several micro-batches."""
import logging
from typing import Dict, List, Sequence

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner import IterBasedTrainLoop
from mmseg.registry import LOOPS

from ...models.utils.accumulation import publish_micro_batch


def accumulative_counts(optim_wrapper: OptimWrapper) -> int:
    """The ``accumulative_counts`` of an optimiser wrapper (or of every
    wrapper of an ``OptimWrapperDict``, which must agree).

    Raises:
        ValueError: If the wrappers of a dict accumulate differently.
    """
    wrappers = (optim_wrapper.values() if isinstance(
        optim_wrapper, OptimWrapperDict) else [optim_wrapper])
    # mmengine 0.10 keeps the setting private; 1 where a wrapper lacks it
    counts = {getattr(w, '_accumulative_counts', 1) for w in wrappers}
    if len(counts) != 1:
        raise ValueError('the optimiser wrappers accumulate different '
                         f'numbers of micro-batches: {sorted(counts)}')
    return counts.pop()


def mean_outputs(outputs: Sequence[Dict[str, torch.Tensor]]
                 ) -> Dict[str, torch.Tensor]:
    """Per-key mean of the log variables of a step's micro-batches."""
    keys = dict.fromkeys(key for output in outputs for key in output)
    return {
        key: torch.stack([torch.as_tensor(o[key]) for o in outputs
                          if key in o]).mean(0)
        for key in keys
    }


@LOOPS.register_module()
class AccumulatingIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` in which one iteration is one optimiser step.

    With ``optim_wrapper.accumulative_counts = N`` every iteration trains on
    N batches of the data loader (micro-batches), whose gradients the
    optimiser wrapper sums (each loss divided by N; under DDP, gradients are
    all-reduced only on the last one) before it steps once. So N
    micro-batches of B images on G GPUs are one step of a global batch of
    N x G x B images, as G x N GPUs with B images each would take it:

    - ``runner.iter`` and ``max_iters`` count optimiser steps, so every
      hook, scheduler and interval counts steps: the teacher moves once per
      step (``FSRTeacherHook.after_train_iter``), the learning rate, loss
      starts, masking warm-up and teacher temperature follow steps, logging,
      checkpoints and validation come every ``interval`` steps, and
      fractions of ``max_iters`` keep their meaning;
    - the DINO centres of ``FSRUncertainLoss`` / ``FSRCertainLoss`` move once
      per step with the mean over all its micro-batches (the loop publishes
      the micro-batch position in the ``MessageHub`` runtime info, see
      ``mmseg_fsr.models.utils.accumulation``);
    - checkpoints fall on step boundaries, and ``--resume`` skips
      ``iter x N`` batches of the data loader and restarts at the next step.

    ``before_train_iter`` and ``after_train_iter`` run once per step; hooks
    get the step's first micro-batch as ``data_batch`` and, as ``outputs``,
    the mean of the micro-batches' log variables. With N = 1 this is
    ``IterBasedTrainLoop``. mmengine's ``IterBasedTrainLoop`` with
    ``accumulative_counts`` instead counts micro-batches as iterations,
    which moves FSR's teacher and centres once per micro-batch.

    Args:
        See :class:`mmengine.runner.IterBasedTrainLoop`; ``max_iters``,
        ``val_begin``, ``val_interval`` and ``dynamic_intervals`` are in
        optimiser steps.
    """

    @property
    def accumulative_counts(self) -> int:
        """Micro-batches per optimiser step (the optimiser wrapper's)."""
        return accumulative_counts(self.runner.optim_wrapper)

    def run(self) -> torch.nn.Module:
        """Launch training: ``max_iters`` optimiser steps."""
        counts = self.accumulative_counts
        # the wrapper counts micro-batches, Runner.train set it in steps
        self.runner.optim_wrapper.initialize_count_status(
            self.runner.model, self._iter * counts, self._max_iters * counts)
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            print_log(
                f'Advance dataloader {self._iter * counts} batches '
                f'({self._iter} steps of {counts}) to skip data that has '
                'already been trained',
                logger='current',
                level=logging.WARNING)
            for _ in range(self._iter * counts):
                next(self.dataloader_iterator)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(
                [next(self.dataloader_iterator) for _ in range(counts)])
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        publish_micro_batch(0, 1)  # later forward passes are whole steps
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_iter(self, data_batches: List[dict]) -> None:
        """One optimiser step over its micro-batches.

        Args:
            data_batches (list[dict]): The step's batches from the data
                loader, ``accumulative_counts`` of them.
        """
        self.runner.call_hook(
            'before_train_iter', batch_idx=self._iter,
            data_batch=data_batches[0])
        outputs = []
        for index, data_batch in enumerate(data_batches):
            publish_micro_batch(index, len(data_batches))
            outputs.append(self.runner.model.train_step(
                data_batch, optim_wrapper=self.runner.optim_wrapper))
        self.runner.call_hook(
            'after_train_iter',
            batch_idx=self._iter,
            data_batch=data_batches[0],
            outputs=mean_outputs(outputs))
        self._iter += 1
