"""Uncertainty-guided token masking of FSR (Eq. 3-4)."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.arguments import check_unit_interval


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

    Masking is decided on square blocks of ``block_size`` pixels (authors'
    code: 64 px = 4x4 patches; ``block_size == patch_size`` is the paper's
    per-token masking). A block is uncertain when its CAM score, the maximum
    over the image's classes, lies in ``(beta_l, beta_h)``; uncertain blocks
    are masked first, ties broken by uniform noise (Eq. 4).

    Args:
        mask_ratio (float): Fraction r of blocks to mask, 0 < r < 1.
        uncertain_range (tuple[float, float]): ``(beta_l, beta_h)`` with
            ``0 <= beta_l < beta_h <= 1``.
        strategy (str): ``'uncertain'`` (Eq. 4) or ``'random'``.
        patch_size (int): ViT patch size in pixels; ``FSRSegmentor`` fills
            it in from its backbone.
        block_size (int): Masking block side in pixels, a positive multiple
            of ``patch_size``.
        random_warmup_ratio (float): For the first
            ``int(max_iters * random_warmup_ratio)`` iterations masking is
            purely random even with ``strategy='uncertain'`` (authors: 0.2).
        block_score (str): How a block's score is read from the CAM:
            ``'nearest'`` takes the per-pixel class maximum at the block's
            top-left pixel (the authors' nearest resampling of the thresholded
            map), ``'area'`` averages each class over the block first (the
            paper's per-token score when blocks are single patches).
        num_masked_rounding (str): k = ``'ceil'`` (authors) or ``'floor'``
            (paper) of ``num_blocks * mask_ratio``.
        init_cfg (dict, optional): Initialisation config (no parameters).

    Raises:
        ValueError: On any invalid setting, at build time.
    """

    STRATEGIES = ('uncertain', 'random')
    BLOCK_SCORES = ('nearest', 'area')
    ROUNDINGS = ('ceil', 'floor')

    def __init__(self,
                 mask_ratio: float = 0.4,
                 uncertain_range: Tuple[float, float] = (0.2, 0.7),
                 strategy: str = 'uncertain',
                 patch_size: int = 16,
                 block_size: int = 64,
                 random_warmup_ratio: float = 0.2,
                 block_score: str = 'nearest',
                 num_masked_rounding: str = 'ceil',
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
        choices = (('strategy', strategy, self.STRATEGIES),
                   ('block_score', block_score, self.BLOCK_SCORES),
                   ('num_masked_rounding', num_masked_rounding,
                    self.ROUNDINGS))
        for name, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f'Unknown {name} {value!r}; expected one of '
                                 f'{allowed}')
        if patch_size <= 0:
            raise ValueError(f'patch_size must be positive, got {patch_size}')
        if block_size <= 0 or block_size % patch_size:
            raise ValueError('block_size must be a positive multiple of '
                             f'patch_size={patch_size}, got {block_size}')
        check_unit_interval(random_warmup_ratio=random_warmup_ratio)
        self.mask_ratio = mask_ratio
        self.beta_l, self.beta_h = float(beta_l), float(beta_h)
        self.strategy = strategy
        self.patch_size = patch_size
        self.block_size = block_size
        self.random_warmup_ratio = random_warmup_ratio
        self.block_score = block_score
        self.round_num_masked = (math.ceil if num_masked_rounding == 'ceil'
                                 else math.floor)

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

    def uses_cam(self, cur_iter: int, max_iters: int) -> bool:
        """Whether the mask at 0-based iteration ``cur_iter`` reads the CAM.

        Lets the caller skip computing a CAM that would be ignored.
        """
        return (self.strategy == 'uncertain'
                and cur_iter >= int(max_iters * self.random_warmup_ratio))

    @torch.no_grad()
    def forward(self,
                cams: Optional[Tensor],
                img_labels: Tensor,
                patch_grid: Tuple[int, int],
                noise: Optional[Tensor] = None) -> Tensor:
        """Compute the token mask of the view to be masked.

        Args:
            cams (Tensor, optional): Min-max normalised CAMs in [0, 1] of the
                C foreground classes, shape (B, C, H, W), any resolution;
                None masks at random (``strategy='random'`` or warm-up, see
                :meth:`uses_cam`).
            img_labels (Tensor): Multi-hot image labels, shape (B, C).
            patch_grid (tuple[int, int]): ViT patch grid (h, w).
            noise (Tensor, optional): Uniform noise u per block, shape
                (B, num_blocks); drawn with ``torch.rand`` if None.

        Returns:
            Tensor: Bool token mask, shape (B, h*w), True = masked.

        Raises:
            ValueError: On mismatched shapes or an indivisible patch grid.
        """
        B, C = img_labels.shape
        if cams is not None and (cams.dim() != 4
                                 or tuple(cams.shape[:2]) != (B, C)):
            raise ValueError(
                f'Expected cams (B, C, H, W) and img_labels (B, C), got '
                f'{tuple(cams.shape)} and {tuple(img_labels.shape)}.')
        gh, gw = self.block_grid(patch_grid)
        num_blocks = gh * gw
        if noise is None:
            noise = torch.rand(B, num_blocks, device=img_labels.device)
        elif tuple(noise.shape) != (B, num_blocks):
            raise ValueError(f'noise must have shape {(B, num_blocks)}, got '
                             f'{tuple(noise.shape)}.')
        k = self.round_num_masked(num_blocks * self.mask_ratio)

        if cams is None:
            block_mask = select_random_tokens(noise, k)
        else:
            block_mask = select_uncertain_tokens(
                self.block_scores(cams, img_labels, (gh, gw)), noise,
                self.beta_l, self.beta_h, k)

        p = self.patches_per_block
        patch_mask = block_mask.view(B, gh, 1, gw, 1).expand(B, gh, p, gw, p)
        return patch_mask.reshape(B, gh * p * gw * p)

    def block_scores(self, cams: Tensor, img_labels: Tensor,
                     grid: Tuple[int, int]) -> Tensor:
        """Per-block score s_i: the CAM maximum over present classes.

        Absent classes score 0 (their CAM is multiplied by the 0 label, as in
        the authors' code), so a block only they cover is certain background.

        Args:
            cams (Tensor): CAMs, shape (B, C, H, W).
            img_labels (Tensor): Multi-hot labels, shape (B, C).
            grid (tuple[int, int]): Block grid (gh, gw).

        Returns:
            Tensor: Scores, shape (B, gh*gw).
        """
        cams = cams.float() * img_labels.float()[:, :, None, None]
        if self.block_score == 'area':
            return F.adaptive_avg_pool2d(cams, grid).amax(1).flatten(1)
        scores = F.interpolate(cams.amax(1, keepdim=True), size=grid,
                               mode='nearest')
        return scores.flatten(1)
