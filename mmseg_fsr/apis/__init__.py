"""Offline inference helpers of the export and visualisation tools."""
from .cam_inference import (build_cam_model, build_split_loader,
                            crf_cam_label, export_crf_cam_label,
                            load_model_and_split, save_label_png)
from .strict_inference import StrictSegInferencer, init_model

__all__ = [
    'build_cam_model', 'build_split_loader', 'crf_cam_label',
    'export_crf_cam_label', 'init_model', 'load_model_and_split',
    'save_label_png', 'StrictSegInferencer'
]
