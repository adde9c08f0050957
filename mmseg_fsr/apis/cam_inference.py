"""Offline CAM inference shared by the export and visualisation tools.

Builds a trained ``FSRSegmentor`` with ``test_cfg.output_cams=True``, a
loader over a whole split whose samples carry image-level labels and
ground truth, and turns CAMs into label PNGs (optionally CRF-refined).
"""
import copy
import os.path as osp
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import MODELS
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..models.utils.dense_crf import dense_crf, read_rgb_image
from ..utils.checkpoint_fit import ALLOW_PARTIAL_FLAG, load_checkpoint_strict

# VOC's colour of the 255 ('ignore' / object border) pixels.
IGNORE_COLOUR = (224, 224, 192)
IGNORE_INDEX = 255


def split_dataset_cfg(cfg: Config, split: str) -> dict:
    """Data set config of a whole split, with the config's test pipeline
    (image labels and ground truth packed, for CAM labels and scoring).

    Args:
        cfg (Config): Model / data config.
        split (str): 'train' (the training data set of ``cfg``, e.g. VOC
            train_aug), 'val' (its validation data set) or a split list
            (``ann_file``, relative to ``data_root`` unless absolute) read
            with the test data set's image and mask folders.

    Returns:
        dict: Data set config.

    Raises:
        ValueError: If 'train' / 'val' names a wrapped data set (e.g.
            ``ConcatDataset``) rather than one with an ``ann_file``.
    """
    if split in ('train', 'val'):
        dataset = copy.deepcopy(cfg[f'{split}_dataloader'].dataset)
        if 'ann_file' not in dataset:
            raise ValueError(
                f'the {split} data set of the config is a {dataset.type}, '
                'not a single split: pass its split list to --split instead')
    else:
        dataset = copy.deepcopy(cfg.test_dataloader.dataset)
        dataset.ann_file = split
    dataset.pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    return dataset


def build_cam_model(cfg: Config,
                    checkpoint: str,
                    device: str,
                    allow_partial: bool = False) -> nn.Module:
    """Trained segmentor that outputs CAMs and CAM labels, in eval mode.

    Args:
        cfg (Config): Config of an ``FSRSegmentor``.
        checkpoint (str): Checkpoint file; it must fit the model (see
            :func:`~mmseg_fsr.utils.load_checkpoint_strict`).
        device (str): Torch device.
        allow_partial (bool): Load a checkpoint that does not fit.

    Returns:
        nn.Module: The model.
    """
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.test_cfg.output_cams = True
    model = MODELS.build(model_cfg)
    load_checkpoint_strict(model, checkpoint, allow_partial=allow_partial,
                           opt_in=ALLOW_PARTIAL_FLAG)
    return model.to(device).eval()


def build_split_loader(dataset: Dataset, num_workers: int = 2) -> DataLoader:
    """One image per batch, in split order (native-size inference).

    Args:
        dataset (Dataset): Built data set, or a data set config.
        num_workers (int): Loader processes.

    Returns:
        DataLoader: The loader.
    """
    return Runner.build_dataloader(
        dict(
            batch_size=1,
            num_workers=num_workers,
            persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dataset))


def save_label_png(label: np.ndarray, path: str,
                   palette: Sequence[Sequence[int]]) -> None:
    """Write a label map as a palette ('P' mode) PNG, like VOC's masks.

    Args:
        label (np.ndarray): Class ids in [0, 255], shape (H, W);
            ``IGNORE_INDEX`` for ignored pixels.
        path (str): Output file.
        palette (Sequence): RGB colour per class (the data set's meta
            ``palette``); 255 gets VOC's border colour.
    """
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    lut[IGNORE_INDEX] = IGNORE_COLOUR
    png = Image.fromarray(label.astype(np.uint8))
    png.putpalette(lut.reshape(-1).tolist())  # 'L' -> 'P', ids unchanged
    png.save(path)


def crf_cam_label(image_rgb: np.ndarray,
                  cams: np.ndarray,
                  img_labels: np.ndarray,
                  bg_score: float,
                  crf_cfg: Optional[dict] = None) -> np.ndarray:
    """Refine a CAM label with a dense CRF.

    The CRF input is built only from the image's own classes: a constant
    background score ``bg_score`` is stacked in front of their CAMs, and the
    (K + 1) scores are divided by their per-pixel sum to give
    probabilities. Without the CRF their argmax is exactly the CAM label
    (``cams_to_labels`` with ``bg_thr = bg_score``); the CRF then moves
    the label edges to image edges. The result has no ignore pixels.

    Args:
        image_rgb (np.ndarray): RGB image, shape (H, W, 3), uint8.
        cams (np.ndarray): Normalised CAMs of all C foreground classes,
            shape (C, H, W).
        img_labels (np.ndarray): Multi-hot image labels, shape (C,).
        bg_score (float): Background score, the CAM background threshold.
        crf_cfg (dict, optional): Keyword arguments of ``dense_crf``.

    Returns:
        np.ndarray: Labels (0 = background, c + 1 = class c), shape (H, W),
        uint8.
    """
    present = np.flatnonzero(img_labels)
    scores = np.concatenate([
        np.full((1, ) + cams.shape[1:], bg_score, np.float32),
        cams[present].astype(np.float32)
    ])
    probs = scores / np.maximum(scores.sum(0, keepdims=True), 1e-5)
    refined = dense_crf(image_rgb, probs, **(crf_cfg or {}))
    class_ids = np.concatenate([[0], present + 1]).astype(np.uint8)
    return class_ids[refined.argmax(0)]


def export_crf_cam_label(img_path: str, cams: np.ndarray,
                         img_labels: np.ndarray, bg_score: float,
                         out_path: str,
                         palette: Sequence[Sequence[int]]) -> str:
    """:func:`crf_cam_label` of an image file, saved as a PNG (a pool job).

    Args:
        img_path (str): Image file (read as ``LoadImageFromFile`` does).
        cams, img_labels, bg_score: See :func:`crf_cam_label`.
        out_path (str): PNG to write.
        palette (Sequence): See :func:`save_label_png`.

    Returns:
        str: ``out_path``.
    """
    label = crf_cam_label(read_rgb_image(img_path), cams, img_labels,
                          bg_score)
    save_label_png(label, out_path, palette)
    return out_path


def load_model_and_split(config: str,
                         checkpoint: str,
                         split: str,
                         cfg_options: Optional[dict] = None,
                         data_root: Optional[str] = None,
                         device: Optional[str] = None,
                         allow_partial: bool = False) -> tuple:
    """What the CAM tools start with: the CAM model and the split data set.

    Args:
        config (str): Config file.
        checkpoint (str): Trained checkpoint.
        split (str): See :func:`split_dataset_cfg`.
        cfg_options (dict, optional): ``--cfg-options`` overrides.
        data_root (str, optional): Replaces every data set's data root.
        device (str, optional): Defaults to CUDA when available.
        allow_partial (bool): Load a checkpoint that does not fit the model.

    Returns:
        tuple: ``(model, dataset)``.
    """
    import torch
    from mmseg.registry import DATASETS

    from ..utils.config_utils import set_data_root

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root:
        set_data_root(cfg, data_root)
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = build_cam_model(cfg, checkpoint, device, allow_partial)
    dataset = DATASETS.build(split_dataset_cfg(cfg, split))
    return model, dataset


def score_label_files(dataset: Dataset, label_dir: str) -> Optional[dict]:
    """mIoU of the label PNGs in ``label_dir`` against the split's masks.

    Scores what an export wrote, read back from disk, as
    ``PseudoLabelMetric`` scores labels in memory: ignored (255) pixels of a
    label count as wrong wherever the mask is valid.

    Args:
        dataset (Dataset): The exported split; its ``seg_map_path`` masks.
        label_dir (str): Folder of ``<image name>.png`` labels.

    Returns:
        dict, optional: ``mIoU``, ``aAcc`` (%) and ``num_images``; None when
        the split has no masks on disk (e.g. a test split).
    """
    num_classes = len(dataset.metainfo['classes'])
    areas = []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        mask_path = info.get('seg_map_path')
        if not mask_path or not osp.isfile(mask_path):
            return None
        name = osp.splitext(osp.basename(info['img_path']))[0]
        label = np.array(Image.open(osp.join(label_dir, f'{name}.png')))
        mask = np.array(Image.open(mask_path))
        areas.append(
            IoUMetric.intersect_and_union(
                torch.from_numpy(label.astype(np.int64)),
                torch.from_numpy(mask.astype(np.int64)), num_classes,
                IGNORE_INDEX))
    if not areas:
        return None
    totals = [sum(area[i] for area in areas) for i in range(4)]
    metrics = IoUMetric.total_area_to_metrics(*totals, metrics=['mIoU'])
    return dict(mIoU=float(np.nanmean(metrics['IoU']) * 100),
                aAcc=float(metrics['aAcc'] * 100), num_images=len(areas))
