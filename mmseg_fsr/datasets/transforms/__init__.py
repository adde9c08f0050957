from .formatting import PackWSSSInputs
from .image_labels import (GenerateImageLabels, class_ids_to_multi_hot,
                           foreground_class_ids, load_image_label_file)

__all__ = [
    'GenerateImageLabels', 'PackWSSSInputs', 'class_ids_to_multi_hot',
    'foreground_class_ids', 'load_image_label_file'
]
