"""Self-distillation losses of FSR: L_c (Eq. 9) and L_u (Eq. 8)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine import dist
from mmseg.registry import MODELS
from torch import Tensor


class DINOCenteringLoss(nn.Module):
    """Shared DINO machinery: teacher centering, sharpening, temperatures.

    The running ``center`` is a buffer, so it is saved in checkpoints. It is
    updated after each loss computation only in training mode
    (``self.training``), so validation or inference calls leave it alone.

    Args:
        out_channels (int): Projector outputs K.
        student_temp (float): Student temperature T_s.
        teacher_temp (float): Teacher temperature after warm-up.
        warmup_teacher_temp (float): Teacher temperature at progress 0.
        teacher_temp_warmup_ratio (float): Fraction of training over which
            the teacher temperature rises linearly.
        center_momentum (float): EMA momentum m of the center.
        loss_weight (float): Loss weight.
        loss_name (str): Key of the loss in the loss dict.
    """

    # The reference values: teacher 0.04 -> 0.07 over 1/8 of training,
    # student 0.1, center momentum 0.9, loss weight 0.1.
    def __init__(self,
                 out_channels: int = 4096,
                 student_temp: float = 0.1,
                 teacher_temp: float = 0.07,
                 warmup_teacher_temp: float = 0.04,
                 teacher_temp_warmup_ratio: float = 0.125,
                 center_momentum: float = 0.9,
                 loss_weight: float = 0.1,
                 loss_name: str = 'loss_fsr') -> None:
        super().__init__()
        if not 0 <= center_momentum <= 1:
            raise ValueError('center_momentum must be in [0, 1], got '
                             f'{center_momentum}')
        if not 0 <= teacher_temp_warmup_ratio <= 1:
            raise ValueError('teacher_temp_warmup_ratio must be in [0, 1], '
                             f'got {teacher_temp_warmup_ratio}')
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.teacher_temp_warmup_ratio = teacher_temp_warmup_ratio
        self.center_momentum = center_momentum
        self.loss_weight = loss_weight
        self._loss_name = loss_name
        self.register_buffer('center', torch.zeros(1, out_channels))

    @property
    def loss_name(self) -> str:
        """Key of the loss in the loss dict (mmseg convention)."""
        return self._loss_name

    def teacher_temperature(self, progress: float) -> float:
        """Teacher temperature at a training progress in [0, 1].

        Linear from ``warmup_teacher_temp`` to ``teacher_temp`` over
        ``[0, teacher_temp_warmup_ratio]``, then constant.
        """
        progress = max(progress, 0.)
        if progress >= self.teacher_temp_warmup_ratio:
            return self.teacher_temp
        t = progress / self.teacher_temp_warmup_ratio
        return self.warmup_teacher_temp + t * (
            self.teacher_temp - self.warmup_teacher_temp)

    def cross_entropy(self, student_out: Tensor, teacher_out: Tensor,
                      progress: float) -> Tensor:
        """Per-sample H(teacher, student) with a centred, sharpened teacher.

        Args:
            student_out (Tensor): Student logits, shape (..., K).
            teacher_out (Tensor): Teacher logits, shape (..., K); detached.
            progress (float): Training progress in [0, 1].

        Returns:
            Tensor: Cross-entropy, shape (...).
        """
        # float32 for a stable softmax at low temperature under AMP.
        teacher_t = self.teacher_temperature(progress)
        p_teacher = F.softmax(
            (teacher_out.detach().float() - self.center) / teacher_t, dim=-1)
        log_p_student = F.log_softmax(
            student_out.float() / self.student_temp, dim=-1)
        return -(p_teacher * log_p_student).sum(-1)

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """EMA update of the center with the all-reduced batch mean.

        Sum and count are reduced together, so ranks with unequal batch sizes
        give the exact global mean; a no-op reduction when not distributed.

        Args:
            teacher_out (Tensor): Teacher logits, shape (..., K); every row
                over the leading dimensions counts once.
        """
        flat = teacher_out.detach().float().reshape(-1, self.center.shape[1])
        stats = torch.cat((flat.sum(0), flat.new_tensor([flat.shape[0]])))
        dist.all_reduce(stats, op='sum')
        count = stats[-1]
        batch_mean = stats[:-1] / count.clamp(min=1)
        updated = self.center * self.center_momentum + batch_mean * (
            1 - self.center_momentum)
        # No rows anywhere (nothing masked on any rank): keep the center;
        # torch.where avoids a host sync on the count.
        self.center.copy_(torch.where(count > 0, updated, self.center))


@MODELS.register_module()
class FSRCertainLoss(DINOCenteringLoss):
    """L_c (Eq. 9): aggregated-token self-distillation.

    Args:
        See :class:`DINOCenteringLoss`.
    """

    def __init__(self, loss_name: str = 'loss_fsr_c', **kwargs) -> None:
        super().__init__(loss_name=loss_name, **kwargs)

    def forward(self, student_out: Tensor, teacher_out: Tensor,
                progress: float) -> Tensor:
        """Compute the loss, then (training mode) update the center.

        Args:
            student_out (Tensor): Student's projected aggregated token of the
                masked view, shape (B, K).
            teacher_out (Tensor): Teacher's projected aggregated token of the
                other view, shape (B, K).
            progress (float): Training progress in [0, 1].

        Returns:
            Tensor: Scalar weighted loss.
        """
        loss = self.cross_entropy(student_out, teacher_out, progress).mean()
        if self.training:
            self.update_center(teacher_out)
        return self.loss_weight * loss


@MODELS.register_module()
class FSRUncertainLoss(DINOCenteringLoss):
    """L_u (Eq. 8): masked patch-token self-distillation.

    Args:
        See :class:`DINOCenteringLoss`.
    """

    def __init__(self, loss_name: str = 'loss_fsr_u', **kwargs) -> None:
        super().__init__(loss_name=loss_name, **kwargs)

    def forward(self, student_out: Tensor, teacher_out: Tensor,
                token_mask: Tensor, progress: float) -> Tensor:
        """Compute the loss over masked tokens, then update the center.

        Args:
            student_out (Tensor): Student's projected patch tokens of the
                masked view, shape (B, N, K).
            teacher_out (Tensor): Teacher's projected patch tokens of the same
                view unmasked, shape (B, N, K).
            token_mask (Tensor): Bool, shape (B, N), True = masked.
            progress (float): Training progress in [0, 1].

        Returns:
            Tensor: Scalar weighted loss, averaged over all masked tokens of
            the batch; exactly 0 (and differentiable) if none is masked.
        """
        ce = self.cross_entropy(student_out, teacher_out, progress)
        weight = token_mask.to(ce.dtype)
        # clamp keeps 0 / 1 = 0 instead of NaN when nothing is masked.
        loss = (ce * weight).sum() / weight.sum().clamp(min=1.)
        if self.training:
            self.update_center(teacher_out)
        return self.loss_weight * loss
