"""Aggregation module A (masked cross-attention, Eq. 5-7) plus projector P."""
from typing import Callable, Optional, Tuple, Union

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_init
from mmseg.registry import MODELS
from torch import Tensor


class MCABlock(BaseModule):
    """One aggregation block: pre-LN cross-attention + pre-LN FFN.

    The class token is the only query; patch tokens are keys and values and
    are not updated (CaiT class attention, the authors' ``CABlock``). With a
    ``token_mask`` the masked tokens are excluded through
    ``key_padding_mask``, so their attention weights are exactly 0 (Eq. 7).

    Args:
        embed_dims (int): Token channels C.
        num_heads (int): Attention heads.
        mlp_ratio (int): FFN hidden width / C.
        norm_cfg (dict): Config of both norms.
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: int,
                 norm_cfg: dict) -> None:
        super().__init__()
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = nn.MultiheadAttention(
            embed_dims, num_heads, batch_first=True)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(
            embed_dims=embed_dims,
            feedforward_channels=embed_dims * mlp_ratio,
            act_cfg=dict(type='GELU'))

    def forward(
        self,
        cls_token: Tensor,
        patch_tokens: Tensor,
        token_mask: Optional[Tensor] = None,
        return_attention: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Update the class token.

        Args:
            cls_token (Tensor): Query token, shape (B, 1, C).
            patch_tokens (Tensor): Keys / values, shape (B, N, C).
            token_mask (Tensor, optional): Bool, shape (B, N), True = masked
                (excluded). Every row must keep at least one token.
            return_attention (bool): Also return the attention weights.

        Returns:
            Tensor | tuple[Tensor, Tensor]: Updated class token (B, 1, C);
            with ``return_attention``, also the per-head weights (B, heads, N)
            whose rows sum to 1 and are 0 on masked tokens.
        """
        # One pre-norm for query and keys, as the class token and the patch
        # tokens are normed together in class attention.
        kv = self.norm1(patch_tokens)
        attn_out, weights = self.attn(
            self.norm1(cls_token),
            kv,
            kv,
            key_padding_mask=token_mask,
            need_weights=return_attention,
            average_attn_weights=False)
        x = cls_token + attn_out
        x = self.ffn(self.norm2(x), identity=x)
        if return_attention:
            return x, weights.squeeze(2)
        return x


@MODELS.register_module()
class MCAAggregationHead(BaseModule):
    """Aggregates patch tokens into one token and projects tokens (FSR A + P).

    The query is a class token handed in by the caller (the backbone's
    pretrained ``cls_token`` in FSR, as in the authors' code); keys and values
    are the last layer's patch tokens before the backbone's final norm.

    Args:
        in_channels (int): Token channels C.
        num_blocks (int): Number of MCA blocks (used with ``'MCA'`` only).
        num_heads (int): Attention heads per block.
        mlp_ratio (int): FFN hidden width / C.
        aggregation (str): ``'MCA'`` (Eq. 5-7), ``'GAP'`` or ``'GMP'``
            (average / max pooling of the unmasked tokens; ablations).
        mask_attention (bool): Exclude masked tokens from the MCA softmax
            (Eq. 7 of the paper). The authors' code attends to every token
            (masked ones differ only by the mask token): False, the default.
        norm_cfg (dict): Norm of the blocks; eps 1e-6 as the authors' ViT.
        projector (dict): Config of the projector, e.g. ``DINOProjector``.
        init_cfg (dict, optional): Initialisation config; if None, the
            blocks' linear layers get truncated normal (std 0.02).

    Raises:
        ValueError: On an unknown ``aggregation``.
    """

    AGGREGATIONS = ('MCA', 'GAP', 'GMP')

    def __init__(self,
                 in_channels: int = 768,
                 num_blocks: int = 2,
                 num_heads: int = 12,
                 mlp_ratio: int = 4,
                 aggregation: str = 'MCA',
                 mask_attention: bool = False,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 projector: dict = dict(
                     type='DINOProjector',
                     in_channels=768,
                     hidden_channels=2048,
                     bottleneck_channels=256,
                     out_channels=4096),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if aggregation not in self.AGGREGATIONS:
            raise ValueError(f'Unknown aggregation {aggregation!r}; expected '
                             f'one of {self.AGGREGATIONS}')
        self.in_channels = in_channels
        self.aggregation = aggregation
        self.mask_attention = mask_attention
        # Pooling variants have no parameters of their own.
        self.blocks = ModuleList([
            MCABlock(in_channels, num_heads, mlp_ratio, norm_cfg)
            for _ in range(num_blocks if aggregation == 'MCA' else 0)
        ])
        self.projector = MODELS.build(projector)

    def init_weights(self) -> None:
        """Truncated normal (std 0.02) on the blocks' linear layers."""
        super().init_weights()
        if self.init_cfg is None:
            for m in self.blocks.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_init(m, std=.02, bias=0.)

    def aggregate(self,
                  patch_tokens: Tensor,
                  cls_token: Tensor,
                  token_mask: Optional[Tensor] = None) -> Tensor:
        """Aggregate the patch tokens into one token.

        Args:
            patch_tokens (Tensor): Shape (B, N, C).
            cls_token (Tensor): Query, shape (B, C) or (1, C); unused by GAP
                / GMP.
            token_mask (Tensor, optional): Bool, shape (B, N), True = masked.
                GAP / GMP always leave masked tokens out; MCA only with
                ``mask_attention``.

        Returns:
            Tensor: Aggregated token, shape (B, C).

        Raises:
            ValueError: If the mask shape is wrong, or a row is fully masked
                and masked tokens are left out.
        """
        if self.aggregation == 'MCA' and not self.mask_attention:
            token_mask = None  # masked tokens are attended to
        if token_mask is not None:
            if token_mask.shape != patch_tokens.shape[:2]:
                raise ValueError(f'token_mask must have shape (B, N) = '
                                 f'{tuple(patch_tokens.shape[:2])}, got '
                                 f'{tuple(token_mask.shape)}.')
            token_mask = token_mask.bool()
            if token_mask.all(dim=1).any():
                raise ValueError('Every patch token of a sample is masked; '
                                 'nothing is left to aggregate.')

        if self.aggregation == 'GAP':
            if token_mask is None:
                return patch_tokens.mean(1)
            keep = (~token_mask).unsqueeze(-1).to(patch_tokens.dtype)
            return (patch_tokens * keep).sum(1) / keep.sum(1)
        if self.aggregation == 'GMP':
            if token_mask is not None:
                patch_tokens = patch_tokens.masked_fill(
                    token_mask.unsqueeze(-1), float('-inf'))
            return patch_tokens.amax(1)

        x = cls_token.expand(patch_tokens.shape[0], -1).unsqueeze(1)
        for block in self.blocks:
            x = block(x, patch_tokens, token_mask)
        return x.squeeze(1)

    def aggregate_and_project(
            self,
            patch_tokens: Tensor,
            cls_token: Tensor,
            token_mask: Optional[Tensor] = None,
            norm: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """P(norm(A(tokens))): the projected aggregated token.

        Args:
            patch_tokens (Tensor): Shape (B, N, C).
            cls_token (Tensor): Query, shape (B, C) or (1, C).
            token_mask (Tensor, optional): Bool, shape (B, N).
            norm (callable, optional): Applied before the projector; FSR
                passes the backbone's final norm, shared with the patch
                tokens as in the authors' encoder.

        Returns:
            Tensor: Shape (B, K).
        """
        token = self.aggregate(patch_tokens, cls_token, token_mask)
        return self.project(norm(token) if norm is not None else token)

    def project(self, x: Tensor) -> Tensor:
        """Apply the projector.

        Args:
            x (Tensor): Tokens, shape (..., C).

        Returns:
            Tensor: Shape (..., K).
        """
        return self.projector(x)
