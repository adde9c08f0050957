"""Pictures of CAMs, pseudo labels and predictions for one image."""
from typing import Optional, Sequence

import cv2
import numpy as np

# pixels of the title strip above every panel tile
TITLE_HEIGHT = 20


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


def overlay_mask(image: np.ndarray, mask: np.ndarray,
                 alpha: float = 0.6) -> np.ndarray:
    """Darken the masked pixels of an image.

    Args:
        image (np.ndarray): BGR image, shape (H, W, 3), uint8.
        mask (np.ndarray): Bool mask, shape (H, W), True = darkened.
        alpha (float): How far masked pixels go towards black.

    Returns:
        np.ndarray: BGR image, shape (H, W, 3), uint8.
    """
    shaded = image.copy()
    shaded[mask] = (image[mask] * (1 - alpha)).astype(np.uint8)
    return shaded


def add_title(tile: np.ndarray, title: str,
              height: int = TITLE_HEIGHT) -> np.ndarray:
    """Put a strip with a white title above a tile.

    The font shrinks until the title fits the tile's width, so narrow tiles
    keep their full title.

    Args:
        tile (np.ndarray): Image, shape (H, W, 3), uint8.
        title (str): Text of the strip.
        height (int): Strip height in pixels.

    Returns:
        np.ndarray: Shape (height + H, W, 3), uint8.
    """
    width = tile.shape[1]
    strip = np.zeros((height, width, 3), dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), _ = cv2.getTextSize(title, font, 1.0, 1)
    scale = min(0.5, (width - 4) / text_w, (height - 6) / text_h)
    (text_w, text_h), _ = cv2.getTextSize(title, font, scale, 1)
    origin = (max(2, (width - text_w) // 2), (height + text_h) // 2)
    cv2.putText(strip, title, origin, font, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.concatenate([strip, tile], axis=0)


def draw_cam_panel(image: np.ndarray,
                   cams: np.ndarray,
                   img_labels: np.ndarray,
                   palette: Sequence[Sequence[int]],
                   classes: Sequence[str],
                   title: str = 'image',
                   cam_label: Optional[np.ndarray] = None,
                   token_mask: Optional[np.ndarray] = None,
                   par_label: Optional[np.ndarray] = None,
                   prediction: Optional[np.ndarray] = None,
                   gt: Optional[np.ndarray] = None) -> np.ndarray:
    """One titled row: image, CAM of each present class, then the maps given.

    Every tile gets a title strip (:func:`add_title`): ``title`` over the
    image, ``CAM <class>`` over each CAM, then ``CAM label``, ``token mask``
    (masked tokens darkened), ``PAR label``, ``prediction`` and ``ground
    truth``.

    Args:
        image (np.ndarray): BGR image, shape (H, W, 3), uint8.
        cams (np.ndarray): Normalised CAMs of the C foreground classes,
            shape (C, H, W).
        img_labels (np.ndarray): Multi-hot image labels, shape (C,).
        palette (Sequence): RGB colour per class, background first.
        classes (Sequence[str]): Class names, background first.
        title (str): Title of the image tile, e.g. its file name.
        cam_label, par_label, prediction, gt (np.ndarray, optional): Label
            maps (H, W).
        token_mask (np.ndarray, optional): Bool mask (H, W), True = masked.

    Returns:
        np.ndarray: BGR panel, shape (TITLE_HEIGHT + H, W * n, 3), uint8,
        for n tiles.
    """
    tiles = [(title, image)]
    tiles += [(f'CAM {classes[c + 1]}', overlay_cam(image, cams[c]))
              for c in np.flatnonzero(img_labels)]
    if cam_label is not None:
        tiles.append(('CAM label', colorize_label(cam_label, palette)))
    if token_mask is not None:
        tiles.append(('token mask', overlay_mask(image, token_mask)))
    tiles += [(name, colorize_label(label, palette))
              for name, label in (('PAR label', par_label),
                                  ('prediction', prediction),
                                  ('ground truth', gt))
              if label is not None]
    return np.concatenate([add_title(tile, name) for name, tile in tiles],
                          axis=1)


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
    classes = dataloader.dataset.metainfo['classes']
    written = []
    with torch.no_grad():
        for batch in dataloader:
            for sample in model.test_step(batch):
                image = cv2.imread(sample.img_path)
                name = osp.splitext(osp.basename(sample.img_path))[0]
                panel = draw_cam_panel(
                    image,
                    sample.pred_cams.data.cpu().numpy(),
                    sample.gt_class_labels.cpu().numpy(),
                    palette,
                    classes,
                    title=name,
                    cam_label=sample.pred_cam_label.data[0].cpu().numpy(),
                    par_label=sample.pred_par_label.data[0].cpu().numpy(),
                    prediction=sample.pred_sem_seg.data[0].cpu().numpy(),
                    gt=sample.gt_sem_seg.data[0].cpu().numpy())
                path = osp.join(out_dir, f'{name}.png')
                cv2.imwrite(path, panel)
                written.append(path)
                if len(written) >= max_images:
                    return written
    return written
