"""Panels of what WSSS training learns from, drawn during training."""
import os.path as osp
from contextlib import contextmanager
from typing import Iterator, List, Optional, Union

import cv2
import numpy as np
import torch
import torch.nn as nn
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from ...models.pseudo_labellers import to_8bit_rgb
from ...models.utils import iteration_of, stack_image_labels
from ...visualization import draw_cam_panel


@contextmanager
def _inspecting(model: nn.Module) -> Iterator[None]:
    """No gradients, eval mode and forked torch generators (CPU and the
    model's GPU): nothing training reads afterwards changes."""
    modes = {module: module.training for module in model.modules()}
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), torch.random.fork_rng(
                devices=[device.index] if device.type == 'cuda' else []):
            model.eval()  # no drop path, no batch-norm statistics update
            yield
    finally:
        for module, training in modes.items():
            module.training = training


@HOOKS.register_module()
class WSSSVisualizationHook(Hook):
    """Every ``interval`` iterations, one panel per training image.

    For the first ``num_images`` images of the batch just trained on (view
    1), one titled row (:func:`draw_cam_panel`): the de-normalised image
    (titled with its file name), the multi-scale CAM of each class in its
    image-level label, the token mask that the mask neck would draw for
    the view (FSR models only), the PAR pseudo label of the decoder and the
    decoder's prediction, computed by the model's ``training_maps``. Each
    panel goes to every backend of ``runner.visualizer`` as image
    ``wsss_panel_<i>`` at the iteration count that the logger uses:
    ``vis_data/vis_image/wsss_panel_<i>_<iter>.png`` with mmseg's default
    ``LocalVisBackend``, an image tab with ``TensorboardVisBackend``.

    Only the main process draws. The maps are computed in eval mode,
    without gradients and on forked random generators, with the modules'
    train/eval states restored afterwards, so training (losses, weights,
    random draws) is the same with and without the hook.

    Args:
        interval (int | float): Draw after every ``interval``-th iteration;
            a float in (0, 1] is that fraction of ``max_iters`` (at least 1
            iteration), resolved when training starts, so that a shortened
            run still draws. Defaults to 0.025 (500 of 20k iterations).
        num_images (int): Panels per drawing, the batch's first images.
    """

    # after the loss guard and the teacher update: draws the stepped model
    priority = 'LOW'

    def __init__(self,
                 interval: Union[int, float] = 0.025,
                 num_images: int = 2) -> None:
        fraction = isinstance(interval, float) and 0 < interval <= 1
        count = isinstance(interval, int) and not isinstance(
            interval, bool) and interval > 0
        if not (fraction or count):
            raise ValueError('interval must be a positive int (iterations) '
                             'or a float in (0, 1] (fraction of max_iters), '
                             f'got {interval!r}')
        if num_images <= 0:
            raise ValueError(f'num_images must be positive, got {num_images}')
        self.interval = interval
        self.num_images = num_images

    def before_train(self, runner) -> None:
        """Resolve the interval and read the class names and palette of the
        training data."""
        self.every_iters = max(1, iteration_of(self.interval,
                                               runner.max_iters))
        meta = runner.train_dataloader.dataset.metainfo
        self.classes, self.palette = meta['classes'], meta['palette']

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Draw the panels of this batch every ``interval`` iterations."""
        if not self.every_n_train_iters(runner, self.every_iters) or \
                not is_main_process():
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        for i, panel in enumerate(self.draw_panels(model, data_batch)):
            runner.visualizer.add_image(
                f'wsss_panel_{i}', panel, step=runner.iter + 1)

    def draw_panels(self, model: nn.Module,
                    data_batch: dict) -> List[np.ndarray]:
        """The panels of a training batch.

        Args:
            model (nn.Module): The unwrapped ``WSSSSegmentor``.
            data_batch (dict): A batch of the training data loader.

        Returns:
            list[np.ndarray]: RGB panels, (TITLE_HEIGHT + H, W * n, 3),
            uint8, of the first ``num_images`` images.
        """
        batch = {key: data_batch[key][:self.num_images]
                 for key in ('inputs', 'data_samples')}
        with _inspecting(model):
            data = model.data_preprocessor(batch, training=True)
            images = data['inputs'][:, 0]  # view 1 of (B, 2, 3, H, W)
            labels = stack_image_labels(data['data_samples'],
                                        model.num_classes)
            maps = model.training_maps(images, labels)
        images = to_8bit_rgb(images, *model.data_preprocessor.mean_std())
        images = (images * 255).round().byte().permute(0, 2, 3, 1)
        if model.data_preprocessor.channel_conversion:
            images = images.flip(-1)  # RGB inputs -> BGR tiles
        maps = {key: value.cpu().numpy() for key, value in maps.items()}
        panels = []
        for i, sample in enumerate(data['data_samples']):
            panel = draw_cam_panel(
                np.ascontiguousarray(images[i].cpu().numpy()),
                maps['cams'][i],
                labels[i].cpu().numpy(),
                self.palette,
                self.classes,
                title=self._name(sample.metainfo.get('img_path')),
                token_mask=maps['token_mask'][i]
                if 'token_mask' in maps else None,
                par_label=maps['pseudo_label'][i],
                prediction=maps['prediction'][i])
            panels.append(cv2.cvtColor(panel, cv2.COLOR_BGR2RGB))
        return panels

    @staticmethod
    def _name(path: Optional[str]) -> str:
        return osp.splitext(osp.basename(path))[0] if path else 'image'
