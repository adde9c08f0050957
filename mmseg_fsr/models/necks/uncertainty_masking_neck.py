"""Uncertainty-guided token masking of FSR (Eq. 3-4)."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor


def select_uncertain_tokens(scores: Tensor, noise: Tensor, beta_l: float,
                            beta_h: float, k: int) -> Tensor:
    """Top-k selection on the soft score of Eq. 4.

    ``M_s = u + 1`` where ``beta_l < s < beta_h`` (uncertain) else ``u``.
    Since ``u`` lies in [0, 1), every uncertain token outranks every certain
    one: if there are at least k uncertain tokens, the k with the largest
    ``u`` among them are taken; otherwise all of them plus the certain
    tokens with the largest ``u``.

    Args:
        scores (Tensor): Foreground scores s, shape (B, N).
        noise (Tensor): Uniform noise u in [0, 1), shape (B, N).
        beta_l (float): Lower threshold (exclusive).
        beta_h (float): Upper threshold (exclusive).
        k (int): Number of tokens to select per row, 0 <= k <= N.

    Returns:
        Tensor: Bool mask, shape (B, N), exactly k True per row.
    """
    uncertain = (scores > beta_l) & (scores < beta_h)
    return select_random_tokens(noise + uncertain.to(noise.dtype), k)


def select_random_tokens(noise: Tensor, k: int) -> Tensor:
    """Top-k of the noise alone, i.e. uniformly random masking.

    Args:
        noise (Tensor): Scores to rank, shape (B, N).
        k (int): Number of tokens to select per row.

    Returns:
        Tensor: Bool mask, shape (B, N), exactly k True per row.
    """
    mask = torch.zeros_like(noise, dtype=torch.bool)
    return mask.scatter_(1, noise.topk(k, dim=1).indices, True)


@MODELS.register_module()
class UncertaintyMaskingNeck(BaseModule):
    """Chooses which patch tokens of the student view to mask (FSR Sec. 3.2).

    Masking is decided on square blocks of ``block_size`` pixels (reference
    code: 64 px = 4x4 patches; ``block_size == patch_size`` is the paper's
    per-token masking). Each block's score is the CAM area-averaged over the
    block, maximised over the image's present classes; blocks whose score is
    in ``(beta_l, beta_h)`` are preferred, ties broken by uniform noise.

    Args:
        mask_ratio (float): Fraction r of blocks to mask, 0 < r < 1.
        uncertain_range (tuple[float, float]): ``(beta_l, beta_h)`` with
            ``0 <= beta_l < beta_h <= 1``.
        strategy (str): ``'uncertain'`` (Eq. 4) or ``'random'``.
        patch_size (int): ViT patch size in pixels.
        block_size (int): Masking block side in pixels, a positive multiple
            of ``patch_size``.
        random_warmup_ratio (float): While training progress is below this,
            masking is purely random even with ``strategy='uncertain'``
            (reference code: 0.2).
        init_cfg (dict, optional): Unused (no parameters); kept for API
            uniformity.

    Raises:
        ValueError: On any invalid setting, at build time.
    """

    STRATEGIES = ('uncertain', 'random')

    def __init__(self,
                 mask_ratio: float = 0.4,
                 uncertain_range: Tuple[float, float] = (0.2, 0.7),
                 strategy: str = 'uncertain',
                 patch_size: int = 16,
                 block_size: int = 16,
                 random_warmup_ratio: float = 0.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if not 0 < mask_ratio < 1:
            raise ValueError(f'mask_ratio must be in (0, 1), got {mask_ratio}')
        if len(uncertain_range) != 2:
            raise ValueError('uncertain_range must be (beta_l, beta_h), got '
                             f'{uncertain_range}')
        beta_l, beta_h = uncertain_range
        if not 0 <= beta_l < beta_h <= 1:
            raise ValueError(
                'uncertain_range thresholds out of order: need '
                f'0 <= beta_l < beta_h <= 1, got {uncertain_range}')
        if strategy not in self.STRATEGIES:
            raise ValueError(f'Unknown masking strategy {strategy!r}; '
                             f'expected one of {self.STRATEGIES}')
        if patch_size <= 0:
            raise ValueError(f'patch_size must be positive, got {patch_size}')
        if block_size <= 0 or block_size % patch_size:
            raise ValueError('block_size must be a positive multiple of '
                             f'patch_size={patch_size}, got {block_size}')
        if not 0 <= random_warmup_ratio <= 1:
            raise ValueError('random_warmup_ratio must be in [0, 1], got '
                             f'{random_warmup_ratio}')
        self.mask_ratio = mask_ratio
        self.beta_l, self.beta_h = float(beta_l), float(beta_h)
        self.strategy = strategy
        self.patch_size = patch_size
        self.block_size = block_size
        self.random_warmup_ratio = random_warmup_ratio

    @property
    def patches_per_block(self) -> int:
        """Block side measured in patches."""
        return self.block_size // self.patch_size

    def block_grid(self, patch_grid: Tuple[int, int]) -> Tuple[int, int]:
        """Block grid (gh, gw) for a patch grid (h, w).

        Raises:
            ValueError: If the patch grid is not divisible into blocks.
        """
        h, w = patch_grid
        p = self.patches_per_block
        if h % p or w % p:
            raise ValueError(
                f'Patch grid {h}x{w} is not divisible into blocks of {p}x{p} '
                f'patches (block_size={self.block_size}, '
                f'patch_size={self.patch_size}).')
        return h // p, w // p

    def uses_cam(self, progress: float) -> bool:
        """Whether the mask at training ``progress`` depends on the CAM.

        Lets the caller skip computing a CAM that would be ignored.
        """
        return (self.strategy == 'uncertain'
                and progress >= self.random_warmup_ratio)

    @torch.no_grad()
    def forward(self,
                cams: Tensor,
                img_labels: Tensor,
                patch_grid: Tuple[int, int],
                progress: float = 1.0,
                noise: Optional[Tensor] = None) -> Tensor:
        """Compute the token mask of the view to be masked.

        Args:
            cams (Tensor): Min-max normalised CAMs in [0, 1] of the C
                foreground classes, shape (B, C, H, W), any resolution.
            img_labels (Tensor): Multi-hot image labels, shape (B, C).
            patch_grid (tuple[int, int]): ViT patch grid (h, w).
            progress (float): Training progress in [0, 1]; below
                ``random_warmup_ratio`` masking is random.
            noise (Tensor, optional): Uniform noise u per block, shape
                (B, num_blocks); drawn with ``torch.rand`` if None.

        Returns:
            Tensor: Bool token mask, shape (B, h*w), True = masked.

        Raises:
            ValueError: On mismatched shapes or an indivisible patch grid.
        """
        B, C = cams.shape[:2]
        if cams.dim() != 4 or tuple(img_labels.shape) != (B, C):
            raise ValueError(
                f'Expected cams (B, C, H, W) and img_labels (B, C), got '
                f'{tuple(cams.shape)} and {tuple(img_labels.shape)}.')
        gh, gw = self.block_grid(patch_grid)
        num_blocks = gh * gw
        if noise is None:
            noise = torch.rand(B, num_blocks, device=cams.device)
        elif tuple(noise.shape) != (B, num_blocks):
            raise ValueError(f'noise must have shape {(B, num_blocks)}, got '
                             f'{tuple(noise.shape)}.')
        k = math.floor(num_blocks * self.mask_ratio)

        if (self.strategy == 'random' or progress < self.random_warmup_ratio):
            block_mask = select_random_tokens(noise, k)
        else:
            block_mask = select_uncertain_tokens(
                self.block_scores(cams, img_labels, (gh, gw)), noise,
                self.beta_l, self.beta_h, k)

        p = self.patches_per_block
        patch_mask = block_mask.view(B, gh, 1, gw, 1).expand(B, gh, p, gw, p)
        return patch_mask.reshape(B, gh * p * gw * p)

    @staticmethod
    def block_scores(cams: Tensor, img_labels: Tensor,
                     grid: Tuple[int, int]) -> Tensor:
        """Per-block score s_i: area-pooled CAM, max over present classes.

        Args:
            cams (Tensor): CAMs, shape (B, C, H, W).
            img_labels (Tensor): Multi-hot labels, shape (B, C).
            grid (tuple[int, int]): Block grid (gh, gw).

        Returns:
            Tensor: Scores, shape (B, gh*gw); -inf for an image without
            classes, so none of its blocks counts as uncertain.
        """
        pooled = F.adaptive_avg_pool2d(cams.float(), grid)
        absent = ~img_labels.bool()[:, :, None, None]
        return pooled.masked_fill(absent, float('-inf')).amax(1).flatten(1)
