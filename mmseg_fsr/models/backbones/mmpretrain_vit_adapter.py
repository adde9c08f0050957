"""mmpretrain's ViT / DeiT as an FSR backbone (with token masking)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.token_mask import replace_masked_tokens, tokens_to_map


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
    - :meth:`forward_with_cls_token` also returns the final class token and
      replaces masked patch embeddings by a learnable ``mask_token`` before
      the positional embedding is added (as ``MaskableViT``);
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
            fixed to 'featmap' and ``with_cls_token`` must stay True for FSR.

    Raises:
        ValueError: If ``out_indices`` does not name two increasing layers
            or ``out_type`` is not 'featmap'.
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

    def _forward_tokens(self,
                        inputs: Tensor,
                        token_mask: Optional[Tensor] = None,
                        full_depth_rows: Optional[int] = None
                        ) -> Tuple[Tuple[Tensor, Tensor], Tensor]:
        """mmpretrain's ``forward`` with an optional masking step.

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            token_mask (Tensor, optional): Bool, shape (B, h*w).
            full_depth_rows (int, optional): See :meth:`forward`.

        Returns:
            tuple: The two maps, (B, C, h, w) and (B', C, h, w), and the
            final token sequence (B', [1 +] h*w, C), B' =
            ``full_depth_rows`` or B.
        """
        batch_size = inputs.shape[0]
        x, hw_shape = self.patch_embed(inputs)
        if token_mask is not None:
            x = replace_masked_tokens(x, hw_shape, token_mask,
                                      self.mask_token)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(batch_size, -1, -1), x),
                          dim=1)
        x = x + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            hw_shape,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        x = self.pre_norm(self.drop_after_pos(x))
        outs = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if len(x):  # full_depth_rows=0 leaves no image to go on with
                x = layer(x)
                if i == last and self.final_norm:
                    x = self.ln1(x)
            if i in self.out_indices:
                # mmpretrain's _format_output cannot reshape 0 images
                outs.append(
                    tokens_to_map(x, hw_shape, self.num_extra_tokens))
            if i == self.out_indices[0] and full_depth_rows is not None:
                x = x[:full_depth_rows]
        return tuple(outs), x

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
        outs, _ = self._forward_tokens(inputs, token_mask, full_depth_rows)
        return outs

    def forward_with_cls_token(self,
                               inputs: Tensor,
                               token_mask: Optional[Tensor] = None
                               ) -> Tuple[Tuple[Tensor, Tensor], Tensor]:
        """Like :meth:`forward`, plus the final class token.

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            token_mask (Tensor, optional): Bool, shape (B, h*w).

        Returns:
            tuple: The maps of :meth:`forward` and the final class token
            (B, C), after the final norm when ``final_norm``.

        Raises:
            ValueError: If built with ``with_cls_token=False``.
        """
        if not self.with_cls_token:
            raise ValueError(
                'forward_with_cls_token() requires with_cls_token=True')
        outs, x = self._forward_tokens(inputs, token_mask)
        return outs, x[:, 0]
