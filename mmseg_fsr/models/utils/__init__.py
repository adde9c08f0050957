from .arguments import check_unit_interval
from .cam import (cams_to_labels, cams_to_pseudo_labels, flip_fused_cam,
                  min_max_normalize)
from .ema_teacher import EMATeacher
from .image_labels import stack_image_labels
from .par import PixelAdaptiveRefiner, refine_pseudo_labels
from .permutohedral import PermutohedralLattice, bilateral_filter
from .schedule import iteration_of
from .training_progress import TrainingProgress, runner_training_progress
from .views import ViewFeatures, split_views

__all__ = [
    'cams_to_labels', 'cams_to_pseudo_labels', 'flip_fused_cam',
    'min_max_normalize', 'PixelAdaptiveRefiner', 'refine_pseudo_labels',
    'PermutohedralLattice', 'bilateral_filter', 'EMATeacher',
    'stack_image_labels', 'iteration_of', 'ViewFeatures', 'split_views',
    'check_unit_interval', 'TrainingProgress', 'runner_training_progress'
]
