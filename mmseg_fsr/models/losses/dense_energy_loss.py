"""Dense CRF energy of the segmentation, the regulariser of FSR training."""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .named_loss import NamedLoss

from ..utils.permutohedral import bilateral_filter


class _GatedEnergy(torch.autograd.Function):
    """``-sum(S * ROI * gated) / B`` with the FSR authors' backward.

    ``gated`` = Gate * W(S * ROI) is computed without autograd and the
    gradient is taken as ``-2 * gated * ROI / B``, the gradient of
    ``-S^T W S`` for a constant Gate and a symmetric W. Neither holds:
    Gate depends on S and the lattice W is not exactly symmetric, so this
    is not the exact gradient of the value; it is the one their training
    used.
    """

    @staticmethod
    def forward(ctx, probs: Tensor, roi: Tensor, gated: Tensor) -> Tensor:
        ctx.save_for_backward(roi, gated)
        return -(probs * roi * gated).sum() / probs.shape[0]

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        roi, gated = ctx.saved_tensors
        grad = -2 * grad_output * gated * roi / gated.shape[0]
        return grad, None, None


@MODELS.register_module()
class DenseEnergyLoss(NamedLoss):
    """Dense CRF (bilateral) energy of the softmax segmentation.

    The regulariser of the FSR authors' training step (their
    ``get_energy_loss`` with ``DenseEnergyLoss``, after Tang et al., "On
    Regularized Losses for Weakly-supervised CNN Segmentation", ECCV 2018),
    computed as they compute it:

    1. ``S = softmax(seg_logits)`` at image size; ROI = ``roi`` or all ones.
    2. Downscale by ``scale_factor`` with ``recompute_scale_factor=True``:
       the image, ROI and labels with 'nearest' (``F.interpolate``'s
       default, which they keep for the image too), S with 'bilinear',
       ``align_corners=False``.
    3. ``Gate = ROI - max_k S`` per pixel, set to 1 on unlabelled pixels
       (``ignore_index`` in ``seg_label``), clamped at 0.
    4. ``energy = -sum_k (S_k * ROI)^T diag(Gate) W (S_k * ROI) / B`` with W
       the unnormalised RGB bilateral kernel at the downscaled size
       (``sigma_rgb``, ``sigma_xy * scale_factor``), self-term included,
       through the rloss permutohedral lattice (see
       :func:`~mmseg_fsr.models.utils.permutohedral.bilateral_filter`).
    5. ``loss = loss_weight * energy_weight * energy``.

    There is no restriction to the image's classes: all K channels enter.
    What restricts the energy is the ROI (all ones in the authors'
    training, which passes no crop box) and the Gate, which scales each
    pixel by how unsure the prediction is where a pseudo label exists
    (``1 - max prob``) and keeps full weight where none does.

    By default the gradient is the authors' hand-written one,
    ``-2 * Gate * W(S * ROI) * ROI / B`` w.r.t. the downscaled S, which
    treats Gate as constant and W as symmetric; it is not the gradient of
    the value. ``exact_gradient=True`` back-propagates through the energy
    instead (Gate and the lattice included), same value.

    The value is negative (lower = smoother along colour edges). The
    authors switch it on together with the segmentation loss, after their
    warm-up; that schedule is the segmentor's business. Computed in fp32
    whatever autocast says.

    Args:
        sigma_rgb (float): Colour std of the kernel. Default: 15.
        sigma_xy (float): Spatial std of the kernel in input pixels, scaled
            with the image. Default: 100.
        scale_factor (float): Downscaling before the energy. Default: 0.5.
        energy_weight (float): The authors' inner ``DenseEnergyLoss``
            weight. Default: 1e-7.
        loss_weight (float): Weight of the loss (their ``w_reg``).
            Default: 0.05.
        ignore_index (int): Label of unlabelled pixels. Default: 255.
        exact_gradient (bool): Autograd gradient instead of the authors'.
            Default: False.
        loss_name (str): Key of the loss in the loss dict.
            Default: 'loss_reg'.
    """

    def __init__(self,
                 sigma_rgb: float = 15.0,
                 sigma_xy: float = 100.0,
                 scale_factor: float = 0.5,
                 energy_weight: float = 1e-7,
                 loss_weight: float = 0.05,
                 ignore_index: int = 255,
                 exact_gradient: bool = False,
                 loss_name: str = 'loss_reg') -> None:
        super().__init__(loss_weight, loss_name)
        self.sigma_rgb = sigma_rgb
        self.sigma_xy = sigma_xy
        self.scale_factor = scale_factor
        self.energy_weight = energy_weight
        self.ignore_index = ignore_index
        self.exact_gradient = exact_gradient

    def forward(self,
                inputs: Tensor,
                seg_logits: Tensor,
                seg_label: Tensor,
                mean: Union[Tensor, Sequence[float]],
                std: Union[Tensor, Sequence[float]],
                roi: Optional[Tensor] = None) -> Tensor:
        """Compute the loss.

        Args:
            inputs (Tensor): Network input images as the data pre-processor
                left them (normalised, RGB: the lattice, unlike the exact
                kernel, depends on the channel order), shape (B, 3, H, W).
            seg_logits (Tensor): Decoder logits upsampled (bilinear) to the
                input size, shape (B, K, H, W).
            seg_label (Tensor): Pseudo labels, ``ignore_index`` where
                unlabelled, shape (B, H, W).
            mean (Tensor | Sequence[float]): The data pre-processor's mean,
                3 values (any shape), to recover 0-255 RGB. The authors
                hard-code ImageNet's because their loader uses it.
            std (Tensor | Sequence[float]): The data pre-processor's std.
            roi (Tensor, optional): 1 inside the region the energy covers,
                0 outside, shape (B, H, W). Default: None, the whole image,
                as in the authors' training, whose crop padding (label 255,
                so Gate 1) thus counts, as batch padding does here unless
                ``roi`` leaves it out.

        Returns:
            Tensor: Scalar loss.
        """
        if seg_logits.shape[0] == 0:
            return seg_logits.sum() * 0
        with torch.autocast(seg_logits.device.type, enabled=False):
            mean = torch.as_tensor(
                mean, dtype=torch.float32, device=inputs.device)
            std = torch.as_tensor(
                std, dtype=torch.float32, device=inputs.device)
            images = (inputs.float() * std.reshape(1, 3, 1, 1) +
                      mean.reshape(1, 3, 1, 1))
            images, probs, roi, gate = self._downscaled(
                images, F.softmax(seg_logits.float(), dim=1), roi, seg_label)
            sigma_xy = self.sigma_xy * self.scale_factor
            if self.exact_gradient:
                masked = probs * roi
                filtered = bilateral_filter(images, masked, self.sigma_rgb,
                                            sigma_xy)
                energy = -(masked * gate * filtered).sum() / len(probs)
            else:
                with torch.no_grad():
                    gated = gate * bilateral_filter(
                        images, probs * roi, self.sigma_rgb, sigma_xy)
                energy = _GatedEnergy.apply(probs, roi, gated)
        return self.loss_weight * self.energy_weight * energy

    def _downscaled(self, images: Tensor, probs: Tensor,
                    roi: Optional[Tensor], seg_label: Tensor):
        """Image, probabilities, ROI (all ones by default) and the Gate
        (``ROI - max prob``, 1 on unlabelled pixels, clamped at 0), all at
        ``scale_factor``; (B, 3 / K / 1 / 1, h, w)."""
        if roi is None:
            roi = probs.new_ones(probs[:, 0].shape)
        images = self._downscale(images)
        probs = self._downscale(probs, mode='bilinear', align_corners=False)
        roi = self._downscale(roi[:, None].float())
        label = self._downscale(seg_label[:, None].float())
        # Negative only outside a binary ROI, where S * ROI is 0 anyway;
        # the clamp is the authors' and matters for a fractional ROI.
        gate = roi - probs.amax(dim=1, keepdim=True)
        gate = gate.masked_fill(label == self.ignore_index, 1).clamp(min=0)
        return images, probs, roi, gate

    def _downscale(self, x: Tensor, **kwargs) -> Tensor:
        """``F.interpolate`` by ``scale_factor`` as the authors call it."""
        return F.interpolate(
            x,
            scale_factor=self.scale_factor,
            recompute_scale_factor=True,
            **kwargs)
