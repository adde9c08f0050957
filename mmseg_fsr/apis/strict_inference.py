"""mmseg's ``init_model`` and ``MMSegInferencer`` with strict loading.

Both load a checkpoint non-strictly: keys it lacks and tensors of another
shape only give a warning, and the model predicts with random weights
there. These refuse such a checkpoint, listing the keys and both shapes
(:func:`~mmseg_fsr.utils.checkpoint_fit.check_checkpoint_fits`), unless
``allow_partial=True``.
"""
from typing import Optional, Union

import torch.nn as nn
from mmengine.config import Config
from mmseg.apis import MMSegInferencer
from mmseg.apis import init_model as mmseg_init_model

from ..utils.checkpoint_fit import (check_checkpoint_fits,
                                    load_checkpoint_strict)


def init_model(config: Union[str, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cuda:0',
               cfg_options: Optional[dict] = None,
               allow_partial: bool = False) -> nn.Module:
    """``mmseg.apis.init_model`` that refuses a checkpoint that does not fit.

    Args:
        config (str | Config): Config file or object.
        checkpoint (str, optional): Checkpoint file; must fit the model.
        device (str): Torch device. Defaults to 'cuda:0'.
        cfg_options (dict, optional): Config overrides.
        allow_partial (bool): Load a checkpoint that does not fit (the rest
            keeps its initial values), with a warning listing it.

    Returns:
        nn.Module: The model in eval mode, with the checkpoint's
        ``dataset_meta`` when it holds one.
    """
    model = mmseg_init_model(config, None, device, cfg_options)
    if checkpoint is not None:
        loaded = load_checkpoint_strict(model, checkpoint,
                                        allow_partial=allow_partial)
        dataset_meta = loaded.get('meta', {}).get('dataset_meta')
        if dataset_meta is not None:
            model.dataset_meta = dataset_meta
    return model


class StrictSegInferencer(MMSegInferencer):
    """``MMSegInferencer`` that refuses weights that do not fit the model.

    Args:
        *args, **kwargs: ``MMSegInferencer``'s.
        allow_partial (bool): Load weights that do not fit, with a warning.
    """

    def __init__(self, *args, allow_partial: bool = False, **kwargs) -> None:
        self.allow_partial = allow_partial
        self._weights = kwargs.get('weights', args[1] if len(args) > 1
                                   else None)
        super().__init__(*args, **kwargs)

    def _load_weights_to_model(self, model: nn.Module,
                               checkpoint: Optional[dict], cfg) -> None:
        if checkpoint is not None:
            check_checkpoint_fits(model, checkpoint,
                                  str(self._weights or 'the weights'),
                                  self.allow_partial)
        super()._load_weights_to_model(model, checkpoint, cfg)
