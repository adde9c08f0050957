"""mmseg's local visualiser, for samples without pixel labels."""
from typing import List, Optional

import numpy as np
from mmengine.structures import PixelData
from mmseg.registry import VISUALIZERS
from mmseg.visualization import SegLocalVisualizer


@VISUALIZERS.register_module()
class WSSSLocalVisualizer(SegLocalVisualizer):
    """``SegLocalVisualizer`` that draws a label map without any class pixel
    as the bare image.

    mmseg blends every label map into the image at ``alpha`` (0.8), with
    black where no class is drawn. The two-view training samples of
    ``PackWSSSInputs`` carry an all-``ignore_index`` placeholder
    ``gt_sem_seg`` (WSSS has no pixel labels), which mmseg's
    ``browse_dataset.py`` would show at a fifth of the image's brightness;
    here such a map leaves the image as it is. Maps with at least one class
    pixel (ground truth, predictions) are drawn exactly as mmseg draws them.
    """

    def _draw_sem_seg(self,
                      image: np.ndarray,
                      sem_seg: PixelData,
                      classes: Optional[List],
                      palette: Optional[List],
                      with_labels: Optional[bool] = True) -> np.ndarray:
        """Draw ``sem_seg`` (1, H, W) on the RGB ``image`` (H, W, 3) as
        ``SegLocalVisualizer`` does, unless no pixel holds a class id."""
        if bool((sem_seg.data < len(classes)).any()):
            return super()._draw_sem_seg(image, sem_seg, classes, palette,
                                         with_labels)
        self.set_image(image)
        return image
