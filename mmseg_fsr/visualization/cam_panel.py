"""Pictures of CAMs, pseudo labels and predictions for one image."""
from typing import Optional, Sequence

import cv2
import numpy as np


def colorize_label(label: np.ndarray, palette: Sequence[Sequence[int]],
                   ignore_index: int = 255) -> np.ndarray:
    """Colour a label map; ignored pixels are white.

    Args:
        label (np.ndarray): Class ids, shape (H, W).
        palette (Sequence): RGB colour per class.
        ignore_index (int): Id drawn white.

    Returns:
        np.ndarray: BGR image, shape (H, W, 3), uint8.
    """
    lut = np.full((256, 3), 255, dtype=np.uint8)
    lut[:len(palette)] = np.asarray(palette, dtype=np.uint8)
    lut[ignore_index] = 255
    return np.ascontiguousarray(lut[label.astype(np.uint8)][..., ::-1])


def overlay_cam(image: np.ndarray, cam: np.ndarray,
                alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] activation map over an image as a JET heat map.

    Args:
        image (np.ndarray): BGR image, shape (H, W, 3), uint8.
        cam (np.ndarray): Activation in [0, 1], shape (H, W).
        alpha (float): Weight of the heat map.

    Returns:
        np.ndarray: BGR image, shape (H, W, 3), uint8.
    """
    heat = cv2.applyColorMap(
        (np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


def draw_cam_panel(image: np.ndarray,
                   cams: np.ndarray,
                   img_labels: np.ndarray,
                   palette: Sequence[Sequence[int]],
                   cam_label: Optional[np.ndarray] = None,
                   par_label: Optional[np.ndarray] = None,
                   prediction: Optional[np.ndarray] = None,
                   gt: Optional[np.ndarray] = None) -> np.ndarray:
    """One row: image, CAM of each present class, then the label maps given.

    Args:
        image (np.ndarray): BGR image, shape (H, W, 3), uint8.
        cams (np.ndarray): Normalised CAMs of the C foreground classes,
            shape (C, H, W).
        img_labels (np.ndarray): Multi-hot image labels, shape (C,).
        palette (Sequence): RGB colour per class, background first.
        cam_label, par_label, prediction, gt (np.ndarray, optional): Label
            maps (H, W) drawn in this order when given.

    Returns:
        np.ndarray: BGR panel, shape (H, W * n, 3), uint8.
    """
    tiles = [image]
    tiles += [overlay_cam(image, cams[c]) for c in np.flatnonzero(img_labels)]
    tiles += [
        colorize_label(label, palette)
        for label in (cam_label, par_label, prediction, gt)
        if label is not None
    ]
    return np.concatenate(tiles, axis=1)


def save_cam_panels(model, dataloader, out_dir: str,
                    max_images: int = 8) -> list:
    """Run ``model`` on a data loader and write one panel PNG per image.

    The model must produce CAMs at test time (``FSRSegmentor`` with
    ``test_cfg.output_cams=True``) and the loader must pack image labels and
    ground truth (``GenerateImageLabels`` + ``PackWSSSInputs(
    pack_seg_map=True)``).

    Args:
        model: A segmentor in eval mode.
        dataloader: Its test data loader.
        out_dir (str): Folder for ``<image name>.png``.
        max_images (int): Stop after this many images.

    Returns:
        list[str]: Paths written.
    """
    import os.path as osp

    import mmengine
    import torch

    mmengine.mkdir_or_exist(out_dir)
    palette = dataloader.dataset.metainfo['palette']
    written = []
    with torch.no_grad():
        for batch in dataloader:
            for sample in model.test_step(batch):
                image = cv2.imread(sample.img_path)
                panel = draw_cam_panel(
                    image,
                    sample.pred_cams.data.cpu().numpy(),
                    sample.gt_class_labels.cpu().numpy(),
                    palette,
                    cam_label=sample.pred_cam_label.data[0].cpu().numpy(),
                    par_label=sample.pred_par_label.data[0].cpu().numpy(),
                    prediction=sample.pred_sem_seg.data[0].cpu().numpy(),
                    gt=sample.gt_sem_seg.data[0].cpu().numpy())
                name = osp.splitext(osp.basename(sample.img_path))[0]
                path = osp.join(out_dir, f'{name}.png')
                cv2.imwrite(path, panel)
                written.append(path)
                if len(written) >= max_images:
                    return written
    return written
