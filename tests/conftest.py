"""Shared fixtures: synthetic VOC-layout data and tiny FSR Runner configs."""
import os.path as osp
import sys

import pytest

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.testing import generate_synthetic_voc, tiny_fsr_config

# the analysis tools' shared helpers (benchmark_utils, reference_code)
sys.path.insert(
    0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                'analysis_tools'))


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
