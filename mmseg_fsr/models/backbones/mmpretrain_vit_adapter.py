"""mmpretrain's ViT / DeiT as an FSR backbone (with token masking)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.token_mask import embed_with_cls_token, run_layers


@MODELS.register_module()
class MMPretrainViTAdapter(VisionTransformer):
    """mmpretrain ``VisionTransformer`` (ViT, DeiT, ...) for FSRSegmentor.

    Adds what ``FSRSegmentor`` needs on top of the stock mmpretrain model,
    keeping its parameter names, so mmpretrain classifier checkpoints load
    with ``init_cfg=dict(type='Pretrained', checkpoint=...,
    prefix='backbone.')`` (``pos_embed`` is resized to ``img_size`` by
    mmpretrain's load hook):

    - :meth:`forward` returns two (B, C, h, w) maps: the auxiliary layer's
      and the final layer's (``out_indices``);
    - the layers see patch tokens only (as in the FSR authors' ViT): the
      class token gets its positional embedding and is then set aside as the
      aggregation query ``cls_token``;
    - :meth:`forward_with_tokens` also returns the last layer's patch tokens
      before the final norm (:meth:`normalize_tokens`) and replaces masked
      patch embeddings by a learnable ``mask_token`` before the positional
      embedding is added (as ``MaskableViT``);
    - ``patch_size``, for the input-size check and the masking neck.

    Args:
        arch (str | dict): mmpretrain arch name ('deit-small', 'b', ...) or
            a dict with ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``.
        img_size (int | tuple): Training crop; ``pos_embed`` size.
        patch_size (int): Patch size.
        out_indices (Sequence[int]): Auxiliary and final layer, in that
            order; negative values count from the end. Defaults to (-3, -1)
            (FSR's auxiliary CAM on layer -3).
        **kwargs: Other ``VisionTransformer`` arguments; ``out_type`` is
            fixed to 'featmap' and ``with_cls_token`` must stay True (the
            class token of the checkpoint is the aggregation query).

    Raises:
        ValueError: If ``out_indices`` does not name two increasing layers,
            ``out_type`` is not 'featmap' or ``with_cls_token`` is False.
    """

    def __init__(self,
                 arch: str = 'deit-small',
                 img_size: int = 224,
                 patch_size: int = 16,
                 out_indices: Sequence[int] = (-3, -1),
                 **kwargs) -> None:
        if kwargs.pop('out_type', 'featmap') != 'featmap':
            raise ValueError('MMPretrainViTAdapter outputs feature maps: '
                             "out_type must be 'featmap'")
        if not kwargs.get('with_cls_token', True):
            raise ValueError('MMPretrainViTAdapter needs with_cls_token=True:'
                             ' the class token is the aggregation query')
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            out_indices=list(out_indices),  # mmpretrain edits it in place
            out_type='featmap',
            **kwargs)
        if len(self.out_indices) != 2 or \
                self.out_indices[0] >= self.out_indices[1]:
            raise ValueError(
                'out_indices must be (auxiliary layer, final layer) with the '
                f'auxiliary one first, got {tuple(out_indices)}')
        self.patch_size = patch_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))

    def init_weights(self) -> None:
        """Draw ``mask_token`` first, so a checkpoint holding it wins."""
        trunc_normal_(self.mask_token, std=.02)
        super().init_weights()

    def forward_with_tokens(self,
                            inputs: Tensor,
                            token_mask: Optional[Tensor] = None,
                            full_depth_rows: Optional[int] = None
                            ) -> Tuple[Tuple[Tensor, Tensor], Tensor]:
        """Auxiliary and final maps, plus the last layer's patch tokens.

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            token_mask (Tensor, optional): Bool, shape (B, h*w), True = the
                patch token is replaced by ``mask_token``.
            full_depth_rows (int, optional): See :meth:`forward`.

        Returns:
            tuple: The two maps, (B, C, h, w) and (B', C, h, w), and the last
            layer's patch tokens before the final norm (B', h*w, C), B' =
            ``full_depth_rows`` or B.
        """
        x, hw_shape = embed_with_cls_token(self.patch_embed, inputs,
                                           token_mask, self.mask_token,
                                           self.cls_token)
        x = x + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            hw_shape,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        # the layers see the patch tokens only
        x = self.pre_norm(self.drop_after_pos(x[:, self.num_extra_tokens:]))
        # (mmpretrain's _format_output cannot reshape 0 images)
        outs, tokens = run_layers(self.layers, x, hw_shape, self.out_indices,
                                  self.normalize_tokens, 0, full_depth_rows)
        return tuple(outs), tokens

    def normalize_tokens(self, tokens: Tensor) -> Tensor:
        """The final norm (identity without one), see ``MaskableViT``."""
        return self.ln1(tokens) if self.final_norm else tokens

    def forward(
            self,
            inputs: Tensor,
            token_mask: Optional[Tensor] = None,
            full_depth_rows: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """Auxiliary and final feature maps.

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            token_mask (Tensor, optional): Bool, shape (B, h*w), True = the
                patch token is replaced by ``mask_token``.
            full_depth_rows (int, optional): Only the first
                ``full_depth_rows`` images go on past the auxiliary layer
                (as in ``MaskableViT.forward``; 0 gives an empty final map).
                Defaults to None.

        Returns:
            tuple[Tensor, Tensor]: (aux_map, final_map), (B, C, h, w) and
            (B', C, h, w), B' = ``full_depth_rows`` or B.
        """
        outs, _ = self.forward_with_tokens(inputs, token_mask,
                                           full_depth_rows)
        return outs
