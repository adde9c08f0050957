"""Token helpers of the maskable ViT backbones: mask token, feature map."""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor


def embed_with_cls_token(patch_embed: nn.Module, inputs: Tensor,
                         token_mask: Optional[Tensor], mask_token: Tensor,
                         cls_token: Tensor) -> Tuple[Tensor, Sequence[int]]:
    """Patch embeddings, masked tokens replaced, class token in front.

    The mask token goes in before the positional embedding is added, so
    masked tokens still know where they are (iBOT, FSR).

    Args:
        patch_embed (nn.Module): Returns ((B, h*w, C) tokens, (h, w)).
        inputs (Tensor): Images, (B, 3, H, W).
        token_mask (Tensor, optional): Bool, (B, h*w), True = masked.
        mask_token (Tensor): (1, 1, C).
        cls_token (Tensor): (1, 1, C).

    Returns:
        tuple: Tokens (B, 1 + h*w, C) and the patch grid (h, w).
    """
    x, hw_shape = patch_embed(inputs)
    if token_mask is not None:
        x = replace_masked_tokens(x, hw_shape, token_mask, mask_token)
    return torch.cat((cls_token.expand(len(x), -1, -1), x), dim=1), hw_shape


def replace_masked_tokens(tokens: Tensor, hw_shape: Sequence[int],
                          token_mask: Tensor, mask_token: Tensor) -> Tensor:
    """Put ``mask_token`` in place of the masked patch embeddings.

    Args:
        tokens (Tensor): Patch embeddings, shape (B, h*w, C).
        hw_shape (Sequence[int]): Patch grid (h, w).
        token_mask (Tensor): Bool mask, shape (B, h*w), True = masked.
        mask_token (Tensor): The learnable token, shape (1, 1, C).

    Returns:
        Tensor: Embeddings with masked rows replaced, shape (B, h*w, C).

    Raises:
        ValueError: If ``token_mask`` does not match the patch grid.
    """
    expected = (tokens.shape[0], hw_shape[0] * hw_shape[1])
    if tuple(token_mask.shape) != expected:
        raise ValueError(
            f'token_mask must have shape (B, h*w) = {expected} for a '
            f'{hw_shape[0]}x{hw_shape[1]} patch grid, got '
            f'{tuple(token_mask.shape)}.')
    # torch.where keeps unmasked rows bit-identical to the unmasked path.
    return torch.where(token_mask.bool().unsqueeze(-1),
                       mask_token.to(tokens.dtype), tokens)


def tokens_to_map(tokens: Tensor, hw_shape: Sequence[int],
                  num_extra_tokens: int) -> Tensor:
    """Patch tokens as a feature map, for any batch size including 0.

    Args:
        tokens (Tensor): Token sequence, shape (B, num_extra_tokens + h*w,
            C), extra tokens (class token) first.
        hw_shape (Sequence[int]): Patch grid (h, w).
        num_extra_tokens (int): Leading tokens that are not patches.

    Returns:
        Tensor: Contiguous map, shape (B, C, h, w).
    """
    batch_size, _, channels = tokens.shape
    return tokens[:, num_extra_tokens:].reshape(
        batch_size, hw_shape[0], hw_shape[1],
        channels).permute(0, 3, 1, 2).contiguous()


def run_layers(layers: Sequence[nn.Module], x: Tensor,
               hw_shape: Sequence[int], out_indices: Sequence[int],
               normalize: Callable[[Tensor], Tensor], num_extra_tokens: int,
               full_depth_rows: Optional[int]) -> Tuple[List[Tensor], Tensor]:
    """The transformer layers of a maskable ViT, with an early stop.

    Args:
        layers (Sequence[nn.Module]): The layers, in order.
        x (Tensor): Tokens after the positional embedding, (B, T, C).
        hw_shape (Sequence[int]): Patch grid (h, w).
        out_indices (Sequence[int]): Layers whose output is a map.
        normalize (callable): The final norm, applied after the last layer.
        num_extra_tokens (int): Leading non-patch tokens of ``x``.
        full_depth_rows (int, optional): Only the first ``full_depth_rows``
            images go on past the first layer of ``out_indices``.

    Returns:
        tuple: The (B, C, h, w) maps of ``out_indices`` and the last
        layer's patch tokens before the final norm, (B', h*w, C).
    """
    outs = []
    last, first_out = len(layers) - 1, min(out_indices)
    for i, layer in enumerate(layers):
        if len(x):  # full_depth_rows=0 leaves no image to go on with
            x = layer(x)  # handles with_cp internally
        if i == last:
            tokens, x = x, normalize(x)
        if i in out_indices:
            outs.append(tokens_to_map(x, hw_shape, num_extra_tokens))
        if i == first_out and full_depth_rows is not None:
            x = x[:full_depth_rows]
    return outs, tokens[:, num_extra_tokens:]
