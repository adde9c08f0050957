"""Class activation maps (Eq. 2) and their thresholding into pseudo labels."""
import torch
import torch.nn.functional as F
from torch import Tensor


def min_max_normalize(cams: Tensor, eps: float = 1e-5) -> Tensor:
    """Normalise every CAM channel to [0, 1] independently (Eq. 2).

    Args:
        cams (Tensor): Non-negative activation maps, shape (B, C, H, W).
        eps (float): Keeps all-zero maps at zero instead of NaN.

    Returns:
        Tensor: Normalised maps, shape (B, C, H, W), computed in fp32 so that
        AMP never quantises the thresholds applied afterwards.
    """
    cams = cams.float()
    cams = cams - cams.amin(dim=(2, 3), keepdim=True)
    return cams / (cams.amax(dim=(2, 3), keepdim=True) + eps)


def cams_to_pseudo_labels(cams: Tensor,
                          img_labels: Tensor,
                          high_thr: float,
                          low_thr: float,
                          ignore_index: int = 255) -> Tensor:
    """Threshold CAMs into foreground / background / ignore pseudo labels.

    Only the image's own classes compete. A pixel whose best score is above
    ``high_thr`` takes that class (label ``c + 1``), at or below ``low_thr`` it
    is background (0), anything between is ``ignore_index``.

    Args:
        cams (Tensor): Normalised CAMs in [0, 1], shape (B, C, H, W).
        img_labels (Tensor): Multi-hot image labels, shape (B, C).
        high_thr (float): Foreground threshold.
        low_thr (float): Background threshold.
        ignore_index (int): Label of uncertain pixels.

    Returns:
        Tensor: Pseudo labels, shape (B, H, W), dtype long.
    """
    scores, classes = (cams * img_labels[:, :, None, None]).max(dim=1)
    labels = classes + 1
    labels[scores <= high_thr] = ignore_index
    labels[scores <= low_thr] = 0
    return labels


def cams_to_labels(cams: Tensor, img_labels: Tensor,
                   bg_thr: float) -> Tensor:
    """Label every pixel with its best image class, or background.

    The evaluation form of :func:`cams_to_pseudo_labels`: no ignore band.

    Args:
        cams (Tensor): Normalised CAMs in [0, 1], shape (B, C, H, W).
        img_labels (Tensor): Multi-hot image labels, shape (B, C).
        bg_thr (float): Pixels whose best score is at or below it are
            background.

    Returns:
        Tensor: Labels, shape (B, H, W), dtype long.
    """
    scores, classes = (cams * img_labels[:, :, None, None]).max(dim=1)
    labels = classes + 1
    labels[scores <= bg_thr] = 0
    return labels


def flip_fused_cam(cams: Tensor, size: tuple) -> Tensor:
    """Fuse the CAMs of a batch and of its horizontal flip.

    Args:
        cams (Tensor): Non-negative CAMs (ReLU at token resolution) of
            ``cat([x, x.flip(-1)])``, shape (2B, C, h, w).
        size (tuple): Output size (H, W).

    Returns:
        Tensor: Element-wise max of both, bilinearly resized, shape
        (B, C, H, W). (The authors apply a second ReLU here; bilinear
        resizing of non-negative maps stays non-negative, so it is left out.)
    """
    cams = F.interpolate(cams, size=size, mode='bilinear', align_corners=False)
    plain, flipped = cams.chunk(2)
    return torch.maximum(plain, flipped.flip(-1))
