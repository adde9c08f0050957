"""Shared fixtures: synthetic VOC-layout data and tiny FSR Runner configs."""
import pytest
from mmengine.logging import MessageHub

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.datasets.synthetic import generate_synthetic_voc
from mmseg_fsr.testing import tiny_fsr_config


@pytest.fixture(scope='session')
def synthetic_voc(tmp_path_factory) -> str:
    """A small synthetic VOC-layout data root, made once per session."""
    root = str(tmp_path_factory.mktemp('synthetic_voc'))
    generate_synthetic_voc(root, num_train=16, num_val=4, img_size=(64, 64))
    return root


@pytest.fixture
def tiny_cfg(synthetic_voc, tmp_path):
    """Factory of tiny FSR Runner configs writing into ``tmp_path``."""

    def make(max_iters: int = 4):
        return tiny_fsr_config(synthetic_voc, str(tmp_path / 'work'),
                               max_iters)

    return make


@pytest.fixture
def outside_runner():
    """Hide the Runner's iteration info from the model for one test.

    ``FSRSegmentor`` then takes every loss warm-up as finished.
    """
    hub = MessageHub.get_current_instance()
    saved = {k: hub.runtime_info.pop(k, None) for k in ('iter', 'max_iters')}
    yield
    hub.runtime_info.update({k: v for k, v in saved.items() if v is not None})
