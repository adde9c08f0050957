"""Token helpers of the maskable ViT backbones: mask token, feature map."""
from typing import Sequence

import torch
from torch import Tensor


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
