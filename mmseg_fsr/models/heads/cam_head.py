"""Multi-label classifier whose weights produce class activation maps."""
from typing import Dict, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class CAMHead(BaseModule):
    """Final and auxiliary 1x1 classifiers (no bias) after global max pooling.

    The final classifier reads the last ViT layer, the auxiliary one an
    intermediate layer (ToCo). Both are trained with the multi-label soft
    margin loss on the image-level labels and give the CAMs of Eq. 2.

    Args:
        in_channels (int): Channels of the final tokens.
        num_classes (int): Number of foreground classes C.
        aux_in_channels (int, optional): Channels of the intermediate tokens;
            defaults to ``in_channels``.
        loss_weight (float): Weight of the final classification loss.
        aux_loss_weight (float): Weight of the auxiliary one.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int,
                 aux_in_channels: int = None,
                 loss_weight: float = 1.0,
                 aux_loss_weight: float = 1.0,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.classifier = nn.Conv2d(in_channels, num_classes, 1, bias=False)
        self.aux_classifier = nn.Conv2d(
            aux_in_channels or in_channels, num_classes, 1, bias=False)

    def forward(self, feat: Tensor, aux_feat: Tensor) -> Tuple[Tensor, Tensor]:
        """Image-level logits.

        Args:
            feat (Tensor): Final tokens, shape (B, D, h, w).
            aux_feat (Tensor): Intermediate tokens, shape (B, D', h, w).

        Returns:
            tuple[Tensor, Tensor]: Final and auxiliary logits, each (B, C).
        """
        logits = self.classifier(F.adaptive_max_pool2d(feat, 1)).flatten(1)
        aux_logits = self.aux_classifier(F.adaptive_max_pool2d(aux_feat,
                                                               1)).flatten(1)
        return logits, aux_logits

    def cams(self, feat: Tensor, aux_feat: Tensor) -> Tuple[Tensor, Tensor]:
        """Un-normalised class activation maps, ReLU(Z W^T) of Eq. 2.

        The ReLU acts at token resolution, before any resizing, as in the
        authors' code.

        Args:
            feat (Tensor): Final tokens, shape (B, D, h, w).
            aux_feat (Tensor): Intermediate tokens, shape (B, D', h, w).

        Returns:
            tuple[Tensor, Tensor]: Final and auxiliary CAMs, (B, C, h, w),
            non-negative.
        """
        return (self.classifier(feat).relu(),
                self.aux_classifier(aux_feat).relu())

    def loss(self, feat: Tensor, aux_feat: Tensor,
             img_labels: Tensor) -> Dict[str, Tensor]:
        """Multi-label soft margin losses of both classifiers.

        Args:
            feat (Tensor): Final tokens, shape (B, D, h, w).
            aux_feat (Tensor): Intermediate tokens, shape (B, D', h, w).
            img_labels (Tensor): Multi-hot labels, shape (B, C).

        Returns:
            dict[str, Tensor]: ``loss_cls`` and ``loss_cls_aux``.
        """
        logits, aux_logits = self(feat, aux_feat)
        return dict(
            loss_cls=self.loss_weight * F.multilabel_soft_margin_loss(
                logits.float(), img_labels),
            loss_cls_aux=self.aux_loss_weight * F.multilabel_soft_margin_loss(
                aux_logits.float(), img_labels))
