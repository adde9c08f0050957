"""Fully connected CRF (Krähenbühl & Koltun) on class probabilities.

The test-time refinement of FSR / ToCo: mean-field inference of a dense CRF
whose unary is ``-log`` of the segmentation softmax, with a Gaussian
(smoothness) kernel and a bilateral (appearance) kernel over the RGB image.
Needs ``pydensecrf2`` (imported as ``pydensecrf``); it is imported lazily so
that everything else works without it.
"""
from typing import Tuple

import mmcv
import numpy as np

_INSTALL_HINT = ('dense CRF needs pydensecrf2, which is not installed: '
                 'pip install pydensecrf2')


def import_pydensecrf() -> Tuple[object, object]:
    """Import pydensecrf, with an actionable message when it is missing.

    Returns:
        tuple: The ``pydensecrf.densecrf`` module and
        ``pydensecrf.utils.unary_from_softmax``.

    Raises:
        ImportError: If pydensecrf2 is not installed.
    """
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return dcrf, unary_from_softmax


def dense_crf(image_rgb: np.ndarray,
              probs: np.ndarray,
              num_iters: int = 10,
              gaussian_sxy: float = 1.0,
              gaussian_compat: float = 1.0,
              bilateral_sxy: float = 121.0,
              bilateral_srgb: float = 5.0,
              bilateral_compat: float = 4.0) -> np.ndarray:
    """Refine per-pixel class probabilities with a dense CRF.

    Defaults are the FSR / ToCo test settings (10 iterations, Gaussian
    sxy=1 compat=1, bilateral sxy=121 srgb=5 compat=4).

    Args:
        image_rgb (np.ndarray): RGB image, shape (H, W, 3), uint8.
        probs (np.ndarray): Class probabilities summing to 1 over the first
            axis, shape (C, H, W), float.
        num_iters (int): Mean-field iterations.
        gaussian_sxy (float): Spatial std of the smoothness kernel (pixels).
        gaussian_compat (float): Weight of the smoothness kernel.
        bilateral_sxy (float): Spatial std of the appearance kernel.
        bilateral_srgb (float): Colour std of the appearance kernel.
        bilateral_compat (float): Weight of the appearance kernel.

    Returns:
        np.ndarray: Refined probabilities, shape (C, H, W), float32.

    Raises:
        ImportError: If pydensecrf2 is not installed.
        ValueError: If the image and the probabilities differ in size.
    """
    dcrf, unary_from_softmax = import_pydensecrf()
    num_classes, height, width = probs.shape
    if image_rgb.shape != (height, width, 3) or image_rgb.dtype != np.uint8:
        raise ValueError(
            'dense_crf needs a uint8 RGB image of the probabilities\' size '
            f'({height}, {width}, 3), got {image_rgb.dtype} '
            f'{image_rgb.shape}')
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    # unary_from_softmax clips probabilities away from 0 before -log.
    crf.setUnaryEnergy(
        np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy,
        srgb=bilateral_srgb,
        rgbim=np.ascontiguousarray(image_rgb),
        compat=bilateral_compat)
    refined = crf.inference(num_iters)
    return np.asarray(refined, dtype=np.float32).reshape(
        num_classes, height, width)


def read_rgb_image(img_path: str) -> np.ndarray:
    """Read the image a CRF runs against.

    Decoded by cv2 as ``LoadImageFromFile`` does, so its size is the
    sample's ``ori_shape``, then turned to RGB (the CRF's colour kernel
    uses the reference's RGB order).

    Args:
        img_path (str): Image file.

    Returns:
        np.ndarray: RGB image, shape (H, W, 3), uint8.
    """
    return mmcv.imread(img_path, channel_order='rgb')


def crf_from_image_file(img_path: str, probs: np.ndarray,
                        crf_cfg: dict) -> np.ndarray:
    """Read an image and run :func:`dense_crf` on it (a pool job).

    Workers get the path rather than the pixels: the image is read where it
    is used, so only the probabilities cross the process boundary.

    Args:
        img_path (str): Image file, see :func:`read_rgb_image`.
        probs (np.ndarray): Probabilities, shape (C, H, W).
        crf_cfg (dict): Keyword arguments of :func:`dense_crf`.

    Returns:
        np.ndarray: Refined probabilities, shape (C, H, W), float32.
    """
    return dense_crf(read_rgb_image(img_path), probs, **crf_cfg)
