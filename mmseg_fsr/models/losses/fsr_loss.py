"""Self-distillation losses of FSR: L_c (Eq. 9) and L_u (Eq. 8)."""
import torch
import torch.nn.functional as F
from mmengine import dist
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.accumulation import ends_optimizer_step
from ..utils.arguments import check_unit_interval
from .named_loss import NamedLoss


class DINOCenteringLoss(NamedLoss):
    """Shared DINO machinery: teacher centering, sharpening, temperatures.

    The running ``center`` is a buffer, so it is saved in checkpoints. It is
    updated once per optimiser step, only in training mode
    (``self.training``), so validation or inference calls leave it alone.
    With gradient accumulation (``AccumulatingIterBasedTrainLoop``) the
    teacher outputs of the step's micro-batches are summed and the center
    moves once, after the last one, with their mean: what one pass over the
    whole batch, or the all-reduce over the ranks of a multi-GPU step,
    gives.

    Args:
        out_channels (int): Projector outputs K.
        student_temp (float): Student temperature T_s.
        teacher_temp (float): Teacher temperature after warm-up.
        warmup_teacher_temp (float): Teacher temperature at iteration 0.
        teacher_temp_warmup_ratio (float): Fraction of the training
            iterations over which the teacher temperature rises linearly.
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
        super().__init__(loss_weight, loss_name)
        check_unit_interval(
            center_momentum=center_momentum,
            teacher_temp_warmup_ratio=teacher_temp_warmup_ratio)
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.teacher_temp_warmup_ratio = teacher_temp_warmup_ratio
        self.center_momentum = center_momentum
        self.register_buffer('center', torch.zeros(1, out_channels))
        # (sum over rows, row count) of the step's earlier micro-batches;
        # None at step boundaries, where checkpoints are written
        self._step_stats = None

    def teacher_temperature(self, cur_iter: int, max_iters: int) -> float:
        """Teacher temperature at 0-based iteration ``cur_iter``.

        Over the first ``W = int(max_iters * teacher_temp_warmup_ratio)``
        iterations it rises linearly from ``warmup_teacher_temp`` to
        ``teacher_temp``, reached at iteration W - 1 (the authors'
        ``np.linspace(warmup, final, W)[cur_iter]``); then constant.
        """
        warmup = int(max_iters * self.teacher_temp_warmup_ratio)
        if cur_iter >= warmup:
            return self.teacher_temp
        if warmup == 1:
            return self.warmup_teacher_temp
        return self.warmup_teacher_temp + max(cur_iter, 0) * (
            self.teacher_temp - self.warmup_teacher_temp) / (warmup - 1)

    def cross_entropy(self, student_out: Tensor, teacher_out: Tensor,
                      teacher_temp: float) -> Tensor:
        """Per-sample H(teacher, student) with a centred, sharpened teacher.

        Args:
            student_out (Tensor): Student logits, shape (..., K).
            teacher_out (Tensor): Teacher logits, shape (..., K); detached.
            teacher_temp (float): Teacher temperature.

        Returns:
            Tensor: Cross-entropy, shape (...).
        """
        # float32 for a stable softmax at low temperature under AMP.
        p_teacher = F.softmax(
            (teacher_out.detach().float() - self.center) / teacher_temp,
            dim=-1)
        log_p_student = F.log_softmax(
            student_out.float() / self.student_temp, dim=-1)
        return -(p_teacher * log_p_student).sum(-1)

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """EMA update of the center with the all-reduced mean of the step.

        Sum and count are reduced together, so ranks with unequal batch sizes
        give the exact global mean; a no-op reduction when not distributed.
        Before the last micro-batch of an accumulated step the statistics
        are only summed (accumulate, then all-reduce once).

        Args:
            teacher_out (Tensor): Teacher logits, shape (..., K); every row
                over the leading dimensions counts once.
        """
        flat = teacher_out.detach().float().reshape(-1, self.center.shape[1])
        stats = torch.cat((flat.sum(0), flat.new_tensor([flat.shape[0]])))
        if self._step_stats is not None:
            stats = stats + self._step_stats
        if not ends_optimizer_step():
            self._step_stats = stats
            return
        self._step_stats = None
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
                cur_iter: int, max_iters: int) -> Tensor:
        """Compute the loss, then (training mode) update the center.

        Args:
            student_out (Tensor): Student's projected aggregated token of the
                masked view, shape (B, K).
            teacher_out (Tensor): Teacher's projected aggregated token of the
                other view, shape (B, K).
            cur_iter (int): 0-based training iteration.
            max_iters (int): Length of training.

        Returns:
            Tensor: Scalar weighted loss.
        """
        loss = self.cross_entropy(
            student_out, teacher_out,
            self.teacher_temperature(cur_iter, max_iters)).mean()
        if self.training:
            self.update_center(teacher_out)
        return self.loss_weight * loss


@MODELS.register_module()
class FSRUncertainLoss(DINOCenteringLoss):
    """L_u (Eq. 8): masked patch-token self-distillation.

    The student is projected at the masked tokens only (the loss reads
    nothing else); the teacher at every token, because the center follows
    the mean of all of the teacher's patch tokens (DINO / iBOT centering, as
    the authors' code).

    Args:
        See :class:`DINOCenteringLoss`.
    """

    def __init__(self, loss_name: str = 'loss_fsr_u', **kwargs) -> None:
        super().__init__(loss_name=loss_name, **kwargs)

    def forward(self, student_masked: Tensor, teacher_out: Tensor,
                token_mask: Tensor, cur_iter: int, max_iters: int) -> Tensor:
        """Compute the loss over masked tokens, then update the center.

        Args:
            student_masked (Tensor): Student's projected tokens of the masked
                view at the masked positions, in row-major order of
                ``token_mask``, shape (M, K), M = ``token_mask.sum()``.
            teacher_out (Tensor): Teacher's projected patch tokens of the
                same view unmasked, shape (B, N, K).
            token_mask (Tensor): Bool, shape (B, N), True = masked.
            cur_iter (int): 0-based training iteration.
            max_iters (int): Length of training.

        Returns:
            Tensor: Scalar weighted loss: the cross-entropy averaged over each
            image's masked tokens, then over the images; an image without
            masked tokens counts 0 (and the loss stays differentiable).
        """
        token_mask = token_mask.bool()
        if student_masked.shape[0] != int(token_mask.sum()):
            raise ValueError(
                f'student_masked has {student_masked.shape[0]} rows, '
                f'token_mask masks {int(token_mask.sum())} tokens')
        ce = self.cross_entropy(
            student_masked, teacher_out[token_mask],
            self.teacher_temperature(cur_iter, max_iters))
        image_of_row = token_mask.nonzero()[:, 0]
        per_image = ce.new_zeros(token_mask.shape[0]).index_add(
            0, image_of_row, ce)
        # clamp keeps 0 / 1 = 0 for an image with nothing masked
        per_image = per_image / token_mask.sum(1).clamp(min=1)
        if self.training:
            self.update_center(teacher_out)
        return self.loss_weight * per_image.mean()
