"""DINO projection head used by FSR's projector P."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_init
from mmseg.registry import MODELS
from torch import Tensor
from torch.nn.utils.parametrizations import weight_norm


@MODELS.register_module()
class DINOProjector(BaseModule):
    """3-layer MLP, L2 normalisation, weight-normalised linear layer.

    The last layer uses ``torch.nn.utils.parametrizations.weight_norm``
    (deep-copyable, unlike the legacy hook-based ``nn.utils.weight_norm``),
    which matters because the EMA teacher is a deep copy of the student.

    Args:
        in_channels (int): Input channels C.
        hidden_channels (int): Hidden MLP width.
        bottleneck_channels (int): Width before L2 normalisation.
        out_channels (int): Number of prototypes K.
        norm_last_layer (bool): Fix the weight-norm magnitude of the last
            layer to 1 (frozen), as in DINO / the FSR reference.
        init_cfg (dict, optional): Initialisation config; if None,
            :meth:`init_weights` uses DINO's scheme.
    """

    def __init__(self,
                 in_channels: int = 768,
                 hidden_channels: int = 2048,
                 bottleneck_channels: int = 256,
                 out_channels: int = 4096,
                 norm_last_layer: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.GELU(),
            nn.Linear(hidden_channels, hidden_channels), nn.GELU(),
            nn.Linear(hidden_channels, bottleneck_channels))
        self.last_layer = weight_norm(
            nn.Linear(bottleneck_channels, out_channels, bias=False))
        if norm_last_layer:
            magnitude = self.last_layer.parametrizations.weight.original0
            with torch.no_grad():
                magnitude.fill_(1.)
            magnitude.requires_grad = False

    def init_weights(self) -> None:
        """DINO init: truncated normal (std 0.02) on the MLP only.

        The last layer keeps PyTorch's default direction and its unit
        magnitude; a generic ``layer='Linear'`` init_cfg would also match the
        parametrized last layer (a ``nn.Linear`` subclass), hence explicit.
        """
        super().init_weights()
        if self.init_cfg is None:
            for m in self.mlp:
                if isinstance(m, nn.Linear):
                    trunc_normal_init(m, std=.02, bias=0.)

    def forward(self, x: Tensor) -> Tensor:
        """Project tokens.

        Args:
            x (Tensor): Tokens, shape (..., C).

        Returns:
            Tensor: Projections, shape (..., K).
        """
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)
