"""The EMA teacher of self-distillation, kept inside the segmentor."""
import copy
import math
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .cam import min_max_normalize
from .views import split_views


class EMATeacher(nn.ModuleDict):
    """Frozen copies of the student's backbone and aggregation head, moved
    towards them by EMA, and the FSR targets they compute.

    Written here rather than with mmengine's ``ExponentialMovingAverage``:
    that one averages a whole model wrapped around it, needs to be the
    model the runner tests with, and loops over tensors; the teacher here is
    a part of the segmentor (so checkpoints carry it, under ``teacher.``),
    averages only the modules it runs and updates all tensors in one fused
    ``foreach`` call. ``momentum`` is the weight of the *old* teacher, as in
    DINO (mmengine's EMA classes use the opposite convention).

    The momentum follows the authors' cosine schedule over the run's
    optimiser steps (:meth:`momentum_at`); the buffer ``last_step`` (in
    checkpoints) records the last step folded in, so :meth:`follow` moves
    the teacher once per step however often it is called, and a resumed
    run continues exactly.

    Args:
        students (dict[str, nn.Module]): Modules to copy, by name:
            ``backbone`` and ``aggregation_head`` for :meth:`targets`.
        train_mode (bool): Follow the segmentor into train mode (the
            authors' teacher runs with drop path); False pins it to eval.
        momentum (float): Momentum at the first step. Default: 0.9995.
        end_momentum (float): Momentum approached at the last step.
            Default: 1.0.
    """

    def __init__(self,
                 students: Dict[str, nn.Module],
                 train_mode: bool = True,
                 momentum: float = 0.9995,
                 end_momentum: float = 1.0) -> None:
        if not 0 <= momentum <= end_momentum <= 1:
            raise ValueError('need 0 <= momentum <= end_momentum <= 1, got '
                             f'momentum={momentum}, '
                             f'end_momentum={end_momentum}')
        super().__init__({k: copy.deepcopy(m) for k, m in students.items()})
        self.train_mode = train_mode
        self.momentum = momentum
        self.end_momentum = end_momentum
        self.register_buffer('last_step', torch.tensor(-1))
        self.requires_grad_(False)

    def momentum_at(self, step: int, max_steps: int) -> float:
        """Momentum of 0-based step ``step`` of ``max_steps``: ``end - (end
        - start) * (1 + cos(pi * step / max_steps)) / 2`` (the authors'
        ``cosine_scheduler``), ``end`` past the run."""
        progress = min(1.0, step / max(max_steps, 1))
        return self.end_momentum - (self.end_momentum - self.momentum) * (
            1 + math.cos(math.pi * progress)) / 2

    @torch.no_grad()
    def follow(self, students: Dict[str, nn.Module], step: int,
               max_steps: int) -> bool:
        """EMA step for the student after optimiser step ``step``, at
        :meth:`momentum_at`, unless that step is folded in already.

        Args:
            students (dict[str, nn.Module]): The student modules, by name.
            step (int): The 0-based optimiser step just done; < 0: none.
            max_steps (int): The run's length in optimiser steps.

        Returns:
            bool: Whether the teacher moved.
        """
        if step < 0 or int(self.last_step) == step:
            return False
        self.momentum_update(students, self.momentum_at(step, max_steps))
        self.last_step.fill_(step)
        return True

    def train(self, mode: bool = True) -> 'EMATeacher':
        """Switch modes; without ``train_mode`` it stays in eval mode."""
        return super().train(mode and self.train_mode)

    @torch.no_grad()
    def load_students(self, students: Dict[str, nn.Module]) -> None:
        """Become an exact copy of the students (start of training)."""
        for name, student in students.items():
            self[name].load_state_dict(student.state_dict())

    @torch.no_grad()
    def momentum_update(self, students: Dict[str, nn.Module],
                        momentum: float) -> None:
        """EMA step: ``teacher = m * teacher + (1 - m) * student``.

        Args:
            students (dict[str, nn.Module]): The student modules, by name.
            momentum (float): m, the weight of the old teacher, in [0, 1].
        """
        teacher, student = [], []
        for name, module in students.items():
            for s, t in zip(module.state_dict().values(),
                            self[name].state_dict().values()):
                if t.is_floating_point():
                    teacher.append(t)
                    student.append(s.detach())
                else:
                    t.copy_(s)
        torch._foreach_lerp_(teacher, student, 1.0 - momentum)

    @torch.no_grad()
    def targets(self,
                view1: Tensor,
                view2: Tensor,
                certain: bool = True,
                patches: bool = True,
                cam_head: Optional[nn.Module] = None) -> dict:
        """FSR targets from the unmasked views, only those asked for.

        Args:
            view1 (Tensor): First views, (B, 3, H, W).
            view2 (Tensor): Second views, (B, 3, H, W).
            certain (bool): Projected aggregated token of view 1 (L_c).
            patches (bool): Projected patch tokens of view 2 (L_u).
            cam_head (nn.Module, optional): Also the normalised auxiliary
                CAM of view 2 from this head (the single-scale mask).

        Returns:
            dict: ``grid`` (h, w) and, as asked, ``certain`` (B, K),
            ``patches`` (B, N, K) and ``aux_cams`` (B, C, h, w).
        """
        backbone, head = self['backbone'], self['aggregation_head']
        views = [view1] * certain + [view2] * (patches or bool(cam_head))
        maps, tokens = backbone.forward_with_tokens(torch.cat(views))
        feats = split_views(maps, tokens, [len(view1)] * len(views))
        targets = dict(grid=tuple(maps[-1].shape[-2:]))
        if certain:
            targets['certain'] = head.aggregate_and_project(
                feats[0].tokens, backbone.cls_token[:, 0], None,
                backbone.normalize_tokens)
        if patches:
            targets['patches'] = head.project(feats[-1].patches)
        if cam_head is not None:
            targets['aux_cams'] = min_max_normalize(
                cam_head.cams(feats[-1].final, feats[-1].aux)[1])
        return targets
