"""Cross-entropy averaged separately over background and foreground."""
from typing import Optional

import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .named_loss import NamedLoss


@MODELS.register_module()
class BgFgCrossEntropyLoss(NamedLoss):
    """Pixel cross-entropy, background and foreground pixels averaged apart.

    Pseudo labels are dominated by background; averaging the two groups
    separately and then taking their mean keeps foreground from being
    drowned out. A group without pixels is left out of the mean rather than
    turning the loss into NaN.

    Args:
        background_index (int): Label of background. Default: 0.
        loss_weight (float): lambda3 of the paper. Default: 0.1.
        loss_name (str): Default: 'loss_seg'.
    """

    def __init__(self, background_index: int = 0, loss_weight: float = 0.1,
                 loss_name: str = 'loss_seg') -> None:
        super().__init__(loss_weight, loss_name)
        self.background_index = background_index

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                ignore_index: int = 255,
                **kwargs) -> Tensor:
        """Compute the loss.

        Args:
            cls_score (Tensor): Logits, shape (B, K, H, W).
            label (Tensor): Pseudo labels, shape (B, H, W).
            weight (Tensor, optional): Unsupported pixel weights; must be
                None (no sampler).
            ignore_index (int): Label skipped by the loss. Default: 255.

        Returns:
            Tensor: Scalar loss.
        """
        if weight is not None:
            raise ValueError('BgFgCrossEntropyLoss does not support pixel '
                             'weights; remove the sampler from the head')
        pixel_loss = F.cross_entropy(
            cls_score.float(), label, ignore_index=ignore_index,
            reduction='none')
        valid = label != ignore_index
        is_bg = label == self.background_index
        group_means = []
        for group in (valid & is_bg, valid & ~is_bg):
            if group.any():
                group_means.append(pixel_loss[group].mean())
        if not group_means:
            return cls_score.sum() * 0
        return self.loss_weight * sum(group_means) / len(group_means)
