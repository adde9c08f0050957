from .formatting import PackWSSSInputs
from .image_labels import (GenerateImageLabels, UnsafeLabelFileError,
                           class_ids_to_multi_hot, foreground_class_ids,
                           load_image_label_file, save_image_label_file)
from .two_view_augmentation import WSSSMultiView

__all__ = [
    'GenerateImageLabels', 'PackWSSSInputs', 'UnsafeLabelFileError',
    'class_ids_to_multi_hot', 'foreground_class_ids', 'load_image_label_file',
    'save_image_label_file', 'WSSSMultiView'
]
