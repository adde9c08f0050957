"""DeepLab-LargeFOV decode head."""
from typing import List, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class LargeFOVHead(BaseDecodeHead):
    """DeepLab-LargeFOV head: dilated 3x3 convs and a 1x1 classifier, no bias.

    The segmentation decoder of ToCo / FSR. mmseg's ``FCNHead`` comes close
    but always adds conv biases, which the authors' code does not have; its
    convs (the classifier too) are Kaiming-normal (fan out) initialised.

    Args:
        num_convs (int): Number of dilated 3x3 convs. Default: 2.
        dilation (int): Their dilation. Default: 5.
        init_cfg (dict): Initialisation of every conv.
        **kwargs: Arguments of :class:`BaseDecodeHead` (``channels`` is the
            width of the convs, 512 in the authors' code).
    """

    def __init__(self,
                 num_convs: int = 2,
                 dilation: int = 5,
                 init_cfg: dict = dict(
                     type='Kaiming',
                     layer='Conv2d',
                     mode='fan_out',
                     nonlinearity='relu',
                     distribution='normal'),
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        self.conv_seg = nn.Conv2d(
            self.channels, self.out_channels, kernel_size=1, bias=False)
        convs: List[nn.Module] = []
        for i in range(num_convs):
            convs.append(
                ConvModule(
                    self.in_channels if i == 0 else self.channels,
                    self.channels,
                    kernel_size=3,
                    padding=dilation,
                    dilation=dilation,
                    bias=False,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    act_cfg=self.act_cfg))
        self.convs = nn.Sequential(*convs)

    def forward(self, inputs: Tuple[Tensor, ...]) -> Tensor:
        """Segment the selected feature map.

        Args:
            inputs (tuple[Tensor]): Backbone outputs, each (B, C, h, w).

        Returns:
            Tensor: Logits, shape (B, num_classes, h, w).
        """
        return self.cls_seg(self.convs(self._transform_inputs(inputs)))
