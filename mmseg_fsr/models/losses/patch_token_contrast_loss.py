"""Patch token contrast (PTC) loss of ToCo, the affinity loss of FSR."""
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .named_loss import NamedLoss


@MODELS.register_module()
class PatchTokenContrastLoss(NamedLoss):
    """Pull same-label token pairs together, push different-label pairs apart.

    The absolute cosine similarity of every token pair is driven to 1 for
    pairs with the same pseudo label and to 0 for pairs with different
    labels; pairs touching an ignored token and self-pairs are skipped.

    Args:
        ignore_index (int): Token label that takes no part in any pair.
            Default: 255.
        loss_weight (float): lambda2 of the paper. Default: 0.2.
        loss_name (str): Default: 'loss_aff'.
    """

    def __init__(self,
                 ignore_index: int = 255,
                 loss_weight: float = 0.2,
                 loss_name: str = 'loss_aff') -> None:
        super().__init__(loss_weight=loss_weight, loss_name=loss_name)
        self.ignore_index = ignore_index

    def forward(self, tokens: Tensor, token_labels: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            tokens (Tensor): Patch tokens, shape (B, D, h, w).
            token_labels (Tensor): Pseudo labels at token resolution,
                shape (B, h, w).

        Returns:
            Tensor: Scalar loss.
        """
        tokens = F.normalize(tokens.flatten(2).float(), dim=1, eps=1e-8)
        # autocast would run bmm in half precision despite the fp32 inputs
        with torch.autocast(tokens.device.type, enabled=False):
            similarity = torch.bmm(tokens.transpose(1, 2), tokens).abs()
        labels = token_labels.flatten(1)
        valid = labels != self.ignore_index
        pair_valid = valid[:, :, None] & valid[:, None, :]
        pair_valid &= ~torch.eye(
            labels.shape[1], dtype=torch.bool, device=labels.device)
        same = labels[:, :, None] == labels[:, None, :]
        positive = (pair_valid & same).float()
        negative = (pair_valid & ~same).float()
        # +1 in the denominators keeps the loss finite when a set is empty.
        pos_term = 1 - (positive * similarity).sum() / (positive.sum() + 1)
        neg_term = (negative * similarity).sum() / (negative.sum() + 1)
        return self.loss_weight * 0.5 * (pos_term + neg_term)
