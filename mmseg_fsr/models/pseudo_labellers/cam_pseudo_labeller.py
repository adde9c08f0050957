"""CAM pseudo labels: the multi-scale CAM pass, thresholds and PAR."""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.structures import PixelData
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import Tensor

from ..backbones.fsr_backbone_api import stops_early
from ..utils import (PixelAdaptiveRefiner, cams_to_labels,
                     cams_to_pseudo_labels, check_unit_interval,
                     flip_fused_cam, min_max_normalize, refine_pseudo_labels)


def to_8bit_rgb(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """De-normalise network inputs to 8-bit RGB in [0, 1].

    Truncated to 8 bits, as the authors' ``denormalize_img2`` does before
    PAR compares colours.

    Args:
        images (Tensor): Normalised images, shape (B, 3, H, W).
        mean (Tensor): Normalisation mean, shape (3, 1, 1).
        std (Tensor): Normalisation std, shape (3, 1, 1).

    Returns:
        Tensor: Shape (B, 3, H, W).
    """
    images = images * std + mean
    return images.clamp(0, 255).to(torch.uint8).float() / 255


def _budget_shrink(size: Sequence[int], max_tokens: Optional[int],
                   patch: int) -> float:
    """Factor (<= 1) that brings an image of ``size`` within ``max_tokens``
    patch tokens; 1.0 without a budget or within it."""

    def tokens(factor: float) -> int:  # the backbone pads to whole patches
        return math.prod(math.ceil(int(factor * s) / patch) for s in size)

    if not max_tokens or tokens(1.0) <= max_tokens:
        return 1.0
    shrink = math.sqrt(max_tokens / tokens(1.0))
    while tokens(shrink) > max_tokens:
        shrink *= 0.99
    return shrink


@MODELS.register_module()
class CAMPseudoLabeller(BaseModule):
    """Pseudo labels from class activation maps (ToCo / FSR).

    Everything FSR derives from CAMs: the multi-scale, flip-fused CAMs
    (Eq. 2), the PAR-refined pseudo labels of the decoder, the token labels
    of the affinity loss and the labels that score CAMs.

    Args:
        cam_scales (Sequence[float]): Input scales of the CAM pass.
        high_thr (float): Foreground threshold of the pseudo labels.
        low_thr (float): Background threshold of the pseudo labels.
        eval_bg_thr (float): Background threshold of CAMs scored as labels
            (no ignore band). The authors use 0.5 on VOC, 0.45 on COCO.
        ignore_index (int): Label of uncertain pixels.
        par (dict): ``PixelAdaptiveRefiner`` arguments.
        par_down_scale (int): PAR runs at 1 / ``par_down_scale`` of the
            image size.
        init_cfg (dict, optional): Initialisation config (no parameters).

    Raises:
        ValueError: If the thresholds are out of order.
    """

    def __init__(self,
                 cam_scales: Sequence[float] = (1.0, 0.5, 1.5),
                 high_thr: float = 0.7,
                 low_thr: float = 0.25,
                 eval_bg_thr: float = 0.5,
                 ignore_index: int = 255,
                 par: dict = dict(dilations=(1, 2, 4, 8, 12, 24),
                                  num_iter=10),
                 par_down_scale: int = 2,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        check_unit_interval(
            low_thr=low_thr, high_thr=high_thr, eval_bg_thr=eval_bg_thr)
        if not low_thr < high_thr:
            raise ValueError('CAM thresholds out of order: need 0 <= low_thr '
                             f'< high_thr <= 1, got low_thr={low_thr}, '
                             f'high_thr={high_thr}')
        self.cam_scales = tuple(cam_scales)
        self.high_thr, self.low_thr = high_thr, low_thr
        self.eval_bg_thr = eval_bg_thr
        self.ignore_index = ignore_index
        self.refiner = PixelAdaptiveRefiner(**par)
        self.par_down_scale = par_down_scale

    @torch.no_grad()
    def multi_scale_cams(self,
                         backbone: nn.Module,
                         cam_head: nn.Module,
                         images: Tensor,
                         num_final: Optional[int] = None,
                         max_tokens: Optional[int] = None
                         ) -> Tuple[Tensor, Tensor]:
        """Multi-scale, flip-fused CAMs of the final and auxiliary layers.

        For each scale the images and their flips go through the backbone in
        one batch (in its current mode); flipped maps are fused by max,
        scales are summed, then min-max normalised (Eq. 2).

        Args:
            backbone (nn.Module): Returns (aux, ..., final) maps.
            cam_head (nn.Module): ``CAMHead``.
            images (Tensor): Shape (B, 3, H, W).
            num_final (int, optional): Only the first ``num_final`` images
                need the final CAM; the others stop at the auxiliary layer
                when the backbone's ``forward`` takes ``full_depth_rows``.
                Defaults to None: every image.
            max_tokens (int, optional): Token budget of one image: beyond
                it, every scale is shrunk by the factor that brings the
                image (scale 1) within it; CAMs are still returned at
                (H, W). Images within the budget are unaffected. Defaults
                to None.

        Returns:
            tuple[Tensor, Tensor]: CAMs in [0, 1]: final (num_final, C, H, W)
            (of every image if the backbone cannot stop early) and auxiliary
            (B, C, H, W).
        """
        size = images.shape[-2:]
        num_images = len(images)
        kwargs = {}
        if num_final is not None and num_final < num_images and stops_early(
                backbone):
            # the images that go on, and their flips, lead the batch
            kwargs['full_depth_rows'] = 2 * num_final
        else:
            num_final = num_images
        groups = [n for n in (num_final, num_images - num_final) if n]
        shrink = _budget_shrink(size, max_tokens,
                                getattr(backbone, 'patch_size', 1))
        cam_sum = aux_sum = 0
        for scale in self.cam_scales:
            scale = scale * shrink
            scaled = images if scale == 1.0 else F.interpolate(
                images, size=[int(scale * s) for s in size], mode='bilinear',
                align_corners=False)
            # [x, flip(x), y, flip(y)]: x full depth, y auxiliary only
            outs = backbone(
                torch.cat([
                    view for group in scaled.split(groups)
                    for view in (group, group.flip(-1))
                ]), **kwargs)
            cam, aux_cam = cam_head.cams(outs[-1], outs[0])
            cam_sum = cam_sum + flip_fused_cam(cam.float(), size)
            aux_sum = aux_sum + torch.cat([
                flip_fused_cam(group.float(), size)
                for group in aux_cam.split([2 * n for n in groups])
            ])
        return min_max_normalize(cam_sum), min_max_normalize(aux_sum)

    def pseudo_labels(self, images: Tensor, cams: Tensor,
                      img_labels: Tensor) -> Tensor:
        """PAR-refined pseudo labels of the decoder, ignore band included.

        Args:
            images (Tensor): 8-bit RGB in [0, 1] (:func:`to_8bit_rgb`),
                shape (B, 3, H, W).
            cams (Tensor): Normalised CAMs, shape (B, C, H', W').
            img_labels (Tensor): Multi-hot labels, shape (B, C).

        Returns:
            Tensor: Labels at image size, shape (B, H, W), dtype long.
        """
        return refine_pseudo_labels(self.refiner, images, cams, img_labels,
                                    self.high_thr, self.low_thr,
                                    self.ignore_index, self.par_down_scale)

    def token_labels(self, aux_cams: Tensor, img_labels: Tensor,
                     grid: Tuple[int, int]) -> Tensor:
        """Thresholded labels of the affinity loss at token resolution.

        Args:
            aux_cams (Tensor): Normalised auxiliary CAMs, (B, C, H, W).
            img_labels (Tensor): Multi-hot labels, shape (B, C).
            grid (tuple[int, int]): Token grid (h, w).

        Returns:
            Tensor: Labels, shape (B, h, w), dtype long.
        """
        cams = F.interpolate(aux_cams, size=grid, mode='bilinear',
                             align_corners=False)
        return cams_to_pseudo_labels(cams, img_labels, self.high_thr,
                                     self.low_thr, self.ignore_index)

    def eval_labels(self, cams: Tensor, img_labels: Tensor) -> Tensor:
        """CAMs as labels to score: best image class or background.

        Args:
            cams (Tensor): Normalised CAMs, shape (B, C, H, W).
            img_labels (Tensor): Multi-hot labels, shape (B, C).

        Returns:
            Tensor: Labels, shape (B, H, W), dtype long.
        """
        return cams_to_labels(cams, img_labels, self.eval_bg_thr)

    @torch.no_grad()
    def add_predictions(self, backbone: nn.Module, cam_head: nn.Module,
                        inputs: Tensor, data_samples: list,
                        img_labels: Tensor, mean: Tensor,
                        std: Tensor,
                        max_tokens: Optional[int] = None) -> None:
        """Add CAM label maps to data samples, at their original size.

        Every sample gets ``pred_cams`` (C, H, W), ``pred_cam_label`` and
        ``pred_aux_cam_label`` (:meth:`eval_labels` of the final and the
        auxiliary CAM) and ``pred_par_label`` (:meth:`pseudo_labels`), with
        padding removed and test-time flips undone.

        Args:
            backbone (nn.Module): The segmentor's backbone.
            cam_head (nn.Module): Its ``CAMHead``.
            inputs (Tensor): Normalised test images, (B, 3, H, W).
            data_samples (list[SegDataSample]): Their samples, updated.
            img_labels (Tensor): Multi-hot labels, (B, C).
            mean (Tensor): Normalisation mean, (3, 1, 1).
            std (Tensor): Normalisation std, (3, 1, 1).
            max_tokens (int, optional): Token budget of one image; see
                :meth:`multi_scale_cams`.
        """
        cams, aux_cams = self.multi_scale_cams(
            backbone, cam_head, inputs, max_tokens=max_tokens)
        height, width = inputs.shape[-2:]
        for i, sample in enumerate(data_samples):
            meta = sample.metainfo
            left, right, top, bottom = meta.get('padding_size', [0] * 4)
            region = (slice(i, i + 1), slice(None),
                      slice(top, height - bottom), slice(left, width - right))
            maps = [
                resize(x[region], meta['ori_shape'], mode='bilinear',
                       align_corners=False) for x in (cams, aux_cams, inputs)
            ]
            if meta.get('flip', False):
                dims = (-1, ) if meta.get(
                    'flip_direction') == 'horizontal' else (-2, )
                maps = [x.flip(dims) for x in maps]
            cam, aux, image = maps
            labels = img_labels[i:i + 1]
            sample.pred_cams = PixelData(data=cam[0])
            sample.pred_cam_label = PixelData(
                data=self.eval_labels(cam, labels))
            sample.pred_aux_cam_label = PixelData(
                data=self.eval_labels(aux, labels))
            sample.pred_par_label = PixelData(data=self.pseudo_labels(
                to_8bit_rgb(image, mean, std), cam, labels))
