"""Replacing masked patch embeddings by a learnable mask token."""
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
