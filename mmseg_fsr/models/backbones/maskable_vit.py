"""ViT backbone whose patch tokens can be replaced by a mask token."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from torch import Tensor

from .pretrained import check_pretrained
from ..utils.token_mask import (embed_with_cls_token, run_layers,
                                tokens_to_map)


@MODELS.register_module()
class MaskableViT(VisionTransformer):
    """MMSegmentation ViT with iBOT-style token masking (FSR, Sec. 3.2).

    Masked patch embeddings are replaced by one learnable ``mask_token``
    right after patch embedding and *before* the positional embedding is
    added, so masked tokens still know where they are. Everything else is the
    stock :class:`mmseg.models.backbones.VisionTransformer` (same parameter
    names, so mmseg ViT checkpoints load; ``mask_token`` is simply missing
    from them and keeps its initialisation under ``strict=False``).

    For FSR it is built with ``with_cls_token=False``, as the authors' ViT:
    the layers see patch tokens only and ``cls_token`` (the pretrained class
    token) is the query of the aggregation head, which reads the last
    layer's tokens from :meth:`forward_with_tokens` and shares the final norm
    (:meth:`normalize_tokens`).

    Args:
        *args: Positional arguments of ``VisionTransformer``.
        **kwargs: Keyword arguments of ``VisionTransformer``.
            ``output_cls_token`` must stay False.

    Raises:
        ValueError: If ``output_cls_token=True``.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get('output_cls_token', False):
            raise ValueError(
                'MaskableViT does not support output_cls_token=True: FSR '
                'uses cls_token as the aggregation query (see '
                'forward_with_tokens)')
        super().__init__(*args, **kwargs)
        embed_dims = self.cls_token.shape[-1]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        # The stock __init__ froze parameters before mask_token existed.
        self._freeze()

    def init_weights(self) -> None:
        """Initialise ``mask_token`` then the stock ViT weights.

        ``mask_token`` is drawn first so that a checkpoint which does contain
        it (e.g. an FSR checkpoint used as ``Pretrained``) still overrides it.
        """
        trunc_normal_(self.mask_token, std=.02)
        checkpoint = (self.init_cfg or {}).get('checkpoint')
        if isinstance(checkpoint, str) and '://' not in checkpoint:
            # mmengine's own error only says "can not be found".
            check_pretrained(checkpoint)
        super().init_weights()

    def _forward_tokens(self,
                        inputs: Tensor,
                        token_mask: Optional[Tensor] = None,
                        full_depth_rows: Optional[int] = None
                        ) -> Tuple[Tuple[Tensor, ...], Tensor]:
        """Stock ViT token pipeline with an optional masking step.

        Mirrors ``VisionTransformer.forward`` (with ``output_cls_token``
        False) and additionally returns the last layer's patch tokens before
        the final norm.

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            token_mask (Tensor, optional): Bool mask, shape (B, h*w).
            full_depth_rows (int, optional): See :meth:`forward`.

        Returns:
            tuple: ``outs``, one (B, C, h, w) map per ``out_indices`` (plus the
            ``out_origin`` map first), and the last layer's patch tokens
            before the final norm, (B', h*w, C), B' = ``full_depth_rows`` or
            B.
        """
        x, hw_shape = embed_with_cls_token(self.patch_embed, inputs,
                                           token_mask, self.mask_token,
                                           self.cls_token)
        x = self._pos_embeding(x, hw_shape, self.pos_embed)
        if not self.with_cls_token:
            x = x[:, 1:]
        if self.pre_norm:
            x = self.pre_ln(x)

        num_extra = int(self.with_cls_token)
        origin = [tokens_to_map(x, hw_shape, num_extra)
                  ] if self.out_origin else []
        outs, tokens = run_layers(self.layers, x, hw_shape, self.out_indices,
                                  self.normalize_tokens, num_extra,
                                  full_depth_rows)
        return tuple(origin + outs), tokens

    def normalize_tokens(self, tokens: Tensor) -> Tensor:
        """The final norm of the last layer (identity without one).

        FSR also applies it to the aggregated class token, as the authors'
        encoder norms ``[class token; patch tokens]`` together.

        Args:
            tokens (Tensor): Shape (..., C).

        Returns:
            Tensor: Shape (..., C).
        """
        return self.norm1(tokens) if self.final_norm else tokens

    def forward(self,
                inputs: Tensor,
                token_mask: Optional[Tensor] = None,
                full_depth_rows: Optional[int] = None) -> Tuple[Tensor, ...]:
        """Feature maps, optionally with masked patch tokens.

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            token_mask (Tensor, optional): Bool, shape (B, h*w), True = the
                patch token is replaced by ``mask_token``. Rows may differ per
                sample; an all-False row gives the unmasked result.
            full_depth_rows (int, optional): Only the first
                ``full_depth_rows`` images go on past the first layer of
                ``out_indices``; the others stop there, so that layer's map
                has B rows and the later maps have ``full_depth_rows`` (0
                gives empty maps). FSR uses it for images of which only the
                auxiliary CAM is read.
                Defaults to None: every image runs every layer.

        Returns:
            tuple[Tensor]: One (B, C, h, w) map per ``out_indices`` (preceded
            by the pre-transformer map if ``out_origin``).

        Raises:
            ValueError: If ``token_mask`` does not match the patch grid.
        """
        outs, _ = self._forward_tokens(inputs, token_mask, full_depth_rows)
        return outs

    def forward_with_tokens(self,
                            inputs: Tensor,
                            token_mask: Optional[Tensor] = None
                            ) -> Tuple[Tuple[Tensor, ...], Tensor]:
        """Like :meth:`forward`, plus the last layer's patch tokens.

        The tokens are taken before the final norm: FSR's aggregation head
        attends to them, as the authors' class-attention blocks do.

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            token_mask (Tensor, optional): Bool, shape (B, h*w).

        Returns:
            tuple: The outputs of :meth:`forward` and the patch tokens, shape
            (B, h*w, C).

        Raises:
            ValueError: If ``token_mask`` does not match the patch grid.
        """
        return self._forward_tokens(inputs, token_mask)
