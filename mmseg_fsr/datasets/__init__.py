from .checks import DataIssue, DatasetCheckError
from .coco_wsss import COCO_CLASSES, WSSSCOCODataset
from .transforms import *  # noqa: F401,F403
from .voc_wsss import WSSSVOCDataset, pascal_voc_palette

__all__ = [
    'COCO_CLASSES', 'DataIssue', 'DatasetCheckError', 'WSSSCOCODataset',
    'WSSSVOCDataset', 'pascal_voc_palette'
]
