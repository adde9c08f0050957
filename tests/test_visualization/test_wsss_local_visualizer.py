"""``WSSSLocalVisualizer``: mmseg's drawing, except for label-free maps."""
import itertools

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import VISUALIZERS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

import mmseg_fsr  # noqa: F401  (registers the modules)

CLASSES = ('background', 'aeroplane', 'bicycle')
PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
# visualisers are global instances by name: a new one per drawing
NAMES = (f'visualizer_{i}' for i in itertools.count())


def draw(visualizer_type: str, label: np.ndarray,
         image: np.ndarray) -> np.ndarray:
    visualizer = VISUALIZERS.build(
        dict(type=visualizer_type, name=next(NAMES), alpha=0.8))
    visualizer.dataset_meta = dict(classes=CLASSES, palette=PALETTE)
    sample = SegDataSample(
        gt_sem_seg=PixelData(data=torch.from_numpy(label)[None]))
    visualizer.add_datasample('x', image, sample, draw_pred=False)
    return visualizer.get_image()


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(
        40, 255, (24, 32, 3), dtype=np.uint8)


def test_label_free_map_leaves_the_image(image):
    """The two-view samples' all-ignore placeholder: the image itself,
    where mmseg draws it at a fifth of its brightness."""
    placeholder = np.full((24, 32), 255, np.uint8)
    np.testing.assert_array_equal(
        draw('mmseg.WSSSLocalVisualizer', placeholder, image), image)
    stock = draw('mmseg.SegLocalVisualizer', placeholder, image)
    assert stock.mean() == pytest.approx(0.2 * image.mean(), abs=1)


def test_labelled_map_is_drawn_as_mmseg_draws_it(image):
    label = np.zeros((24, 32), np.uint8)
    label[4:16, 6:20] = 1
    label[:, -3:] = 255
    ours = draw('mmseg.WSSSLocalVisualizer', label, image)
    np.testing.assert_array_equal(
        ours, draw('mmseg.SegLocalVisualizer', label, image))
    assert not np.array_equal(ours, image)
    assert isinstance(
        VISUALIZERS.build(
            dict(type='mmseg.WSSSLocalVisualizer', name=next(NAMES))),
        SegLocalVisualizer)
