"""Pixel-adaptive refinement (PAR) of CAMs.

Written here because neither mmseg nor mmpretrain has it (it comes from the
AFA / ToCo WSSS papers): a few rounds of label propagation over a dilated
8-neighbourhood, weighted by colour similarity and spatial distance.
"""
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


# (dy, dx) of the 8 neighbours, diagonals at distance sqrt(2).
_NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1),
                      (1, 0), (1, 1))


class PixelAdaptiveRefiner(nn.Module):
    """Refine per-pixel class scores by image-adaptive propagation.

    Args:
        dilations (Sequence[int]): Neighbourhood dilations.
            Default: (1, 2, 4, 8, 12, 24).
        num_iter (int): Propagation rounds. Default: 10.
        color_temp (float): Temperature of the colour affinity. Default: 0.3.
        pos_weight (float): Weight of the spatial affinity. Default: 0.01.
    """

    def __init__(self,
                 dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
                 num_iter: int = 10,
                 color_temp: float = 0.3,
                 pos_weight: float = 0.01) -> None:
        super().__init__()
        self.dilations = tuple(dilations)
        self.num_iter = num_iter
        self.color_temp = color_temp
        self.pos_weight = pos_weight
        distances = torch.tensor([
            d * math.hypot(dy, dx) for d in self.dilations
            for dy, dx in _NEIGHBOUR_OFFSETS
        ])
        # The spatial term does not depend on the image: compute it once.
        pos_aff = -(distances / (distances.std() + 1e-8) / color_temp)**2
        self.register_buffer(
            'pos_affinity',
            pos_aff.softmax(0).view(1, 1, -1, 1, 1),
            persistent=False)

    def neighbours(self, x: Tensor) -> Tensor:
        """Gather the dilated 8-neighbourhood of every pixel.

        Args:
            x (Tensor): Shape (B, C, H, W).

        Returns:
            Tensor: Shape (B, C, 8 * len(dilations), H, W); borders replicate.
        """
        h, w = x.shape[-2:]
        gathered = []
        for d in self.dilations:
            padded = F.pad(x, [d] * 4, mode='replicate')
            for dy, dx in _NEIGHBOUR_OFFSETS:
                top, left = d + dy * d, d + dx * d
                gathered.append(padded[..., top:top + h, left:left + w])
        return torch.stack(gathered, dim=2)

    def affinity(self, images: Tensor) -> Tensor:
        """Propagation weights from colour and position.

        Per-channel affine changes of ``images`` (such as mean/std
        normalisation) cancel out, so normalised network inputs can be used.

        Args:
            images (Tensor): Shape (B, 3, H, W).

        Returns:
            Tensor: Shape (B, 1, K, H, W), K neighbours.
        """
        nbrs = self.neighbours(images)
        diff = (nbrs - images.unsqueeze(2)).abs()
        std = nbrs.std(dim=2, keepdim=True)
        color_aff = -(diff / (std + 1e-8) / self.color_temp)**2
        color_aff = color_aff.mean(dim=1, keepdim=True).softmax(dim=2)
        return color_aff + self.pos_weight * self.pos_affinity

    def forward(self, images: Tensor, scores: Tensor) -> Tensor:
        """Propagate ``scores`` over ``images``.

        Args:
            images (Tensor): Shape (B, 3, H, W).
            scores (Tensor): Shape (B, C, h, w), resized to (H, W).

        Returns:
            Tensor: Refined scores, shape (B, C, H, W).
        """
        images = images.float()
        scores = F.interpolate(
            scores.float(),
            size=images.shape[-2:],
            mode='bilinear',
            align_corners=True)
        aff = self.affinity(images)
        for _ in range(self.num_iter):
            scores = (self.neighbours(scores) * aff).sum(dim=2)
        return scores


def refine_pseudo_labels(refiner: PixelAdaptiveRefiner,
                         images: Tensor,
                         cams: Tensor,
                         img_labels: Tensor,
                         high_thr: float,
                         low_thr: float,
                         ignore_index: int = 255,
                         down_scale: int = 2) -> Tensor:
    """Pseudo labels from CAMs refined by PAR with two background scores.

    The background score is set to ``high_thr`` and to ``low_thr`` in turn
    (both runs batched into one PAR call); a pixel is background only when
    both runs say so, foreground where the high-background run picks a class,
    and ignored otherwise.

    Args:
        refiner (PixelAdaptiveRefiner): The PAR module.
        images (Tensor): Network inputs, shape (B, 3, H, W).
        cams (Tensor): Normalised CAMs, shape (B, C, H', W').
        img_labels (Tensor): Multi-hot image labels, shape (B, C).
        high_thr (float): Foreground threshold.
        low_thr (float): Background threshold.
        ignore_index (int): Label of uncertain pixels.
        down_scale (int): PAR runs at 1 / down_scale of the image size.

    Returns:
        Tensor: Pseudo labels at image size, shape (B, H, W), dtype long.
    """
    b, _, h, w = images.shape
    small = (h // down_scale, w // down_scale)
    images = F.interpolate(
        images.float(), size=small, mode='bilinear', align_corners=False)
    classes, valid = present_classes(img_labels)
    # Only each image's own classes are refined (PAR is linear per channel,
    # so the others would stay 0): the work does not grow with C.
    cams = F.interpolate(
        cams.float().gather(1, classes[:, :, None, None].expand(
            -1, -1, *cams.shape[-2:])),
        size=small, mode='bilinear', align_corners=False)
    # background first, then the classes; padding gets probability 0
    valid = torch.cat([valid.new_ones(b, 1), valid], dim=1)
    scores = torch.cat([
        torch.cat([cams.new_full((b, 1, *small), bg_score), cams],
                  dim=1).masked_fill(~valid[:, :, None, None],
                                     float('-inf')).softmax(dim=1)
        for bg_score in (high_thr, low_thr)
    ])
    refined = refiner(images.repeat(2, 1, 1, 1), scores)
    refined = F.interpolate(
        refined, size=(h, w), mode='bilinear', align_corners=False)
    refined = refined.masked_fill(~valid.repeat(2, 1)[:, :, None, None], -1)
    best = refined.argmax(dim=1)  # 0 background, i: the i-th present class
    labels_high, labels_low = best.chunk(2)
    labels = torch.cat([classes.new_zeros(b, 1), classes + 1], dim=1).gather(
        1, labels_high.flatten(1)).view(b, h, w)
    labels[labels_high == 0] = ignore_index
    labels[(labels_high == 0) & (labels_low == 0)] = 0
    return labels


def present_classes(img_labels: Tensor):
    """The foreground classes of each image, padded to a common count.

    Args:
        img_labels (Tensor): Multi-hot labels, shape (B, C).

    Returns:
        tuple[Tensor, Tensor]: Class indices (B, K), ascending per image and
        padded with class 0, and whether each entry is real (B, K); K is the
        largest class count of the batch (at least 1).
    """
    num_classes = img_labels.shape[1]
    index = torch.arange(num_classes, device=img_labels.device)
    # present classes sort first, in class order
    keys = torch.where(img_labels > 0, index, index + num_classes)
    order = keys.sort(dim=1).values
    k = max(int((img_labels > 0).sum(1).max()), 1)
    valid = order[:, :k] < num_classes
    return torch.where(valid, order[:, :k], 0), valid
