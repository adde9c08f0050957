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
    drowned out. A group without pixels (a batch whose pseudo labels hold
    no foreground pixel) never turns the loss into NaN.

    By default such a group adds 0 to a mean still taken over both groups:
    what the authors' ``get_seg_loss`` trains. Its loss value is NaN there,
    but the all-ignored cross-entropy half back-propagates zeros, so the
    present group is trained at half weight. ``skip_empty_group=True``
    takes the mean over the present groups only (twice the gradient on such
    batches).

    Args:
        background_index (int): Label of background. Default: 0.
        loss_weight (float): lambda3 of the paper. Default: 0.1.
        loss_name (str): Default: 'loss_seg'.
        skip_empty_group (bool): Average over the groups that have pixels
            instead of over both. Default: False (the authors' gradient).
    """

    def __init__(self, background_index: int = 0, loss_weight: float = 0.1,
                 loss_name: str = 'loss_seg',
                 skip_empty_group: bool = False) -> None:
        super().__init__(loss_weight, loss_name)
        self.background_index = background_index
        self.skip_empty_group = skip_empty_group

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
        num_groups = len(group_means) if self.skip_empty_group else 2
        return self.loss_weight * sum(group_means) / num_groups
