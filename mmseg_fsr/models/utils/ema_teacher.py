"""The EMA teacher of self-distillation, kept inside the segmentor."""
import copy
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

    Args:
        students (dict[str, nn.Module]): Modules to copy, by name:
            ``backbone`` and ``aggregation_head`` for :meth:`targets`.
        train_mode (bool): Follow the segmentor into train mode (the
            authors' teacher runs with drop path); False pins it to eval.
    """

    def __init__(self, students: Dict[str, nn.Module],
                 train_mode: bool = True) -> None:
        super().__init__({k: copy.deepcopy(m) for k, m in students.items()})
        self.train_mode = train_mode
        self.requires_grad_(False)

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
