from .cam import (cams_to_labels, cams_to_pseudo_labels, flip_fused_cam,
                  min_max_normalize)
from .par import PixelAdaptiveRefiner, refine_pseudo_labels
from .permutohedral import PermutohedralLattice, bilateral_filter

__all__ = [
    'cams_to_labels', 'cams_to_pseudo_labels', 'flip_fused_cam',
    'min_max_normalize', 'PixelAdaptiveRefiner', 'refine_pseudo_labels',
    'PermutohedralLattice', 'bilateral_filter'
]
