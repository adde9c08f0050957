"""The comparison with the FSR authors' code, where a checkout is given.

Set ``FSR_REFERENCE_DIR`` to a checkout of
github.com/Jessie459/feature-self-reinforcement to run it; every behaviour
it compares also has a test with hand-computed values in tests/test_models.
"""
import importlib.util
import os
import os.path as osp

import pytest

import reference_code  # tools/analysis_tools, on sys.path by conftest

REFERENCE_DIR = os.environ.get('FSR_REFERENCE_DIR')
TOOL = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
    'analysis_tools', 'reference_parity.py')


needs_reference = pytest.mark.skipif(
    not REFERENCE_DIR, reason="FSR_REFERENCE_DIR (the authors' code) not set")


def load_tool():
    spec = importlib.util.spec_from_file_location('reference_parity', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@needs_reference
def test_every_row_equal_or_documented(capsys):
    status = load_tool().main(['--reference-dir', REFERENCE_DIR])
    out = capsys.readouterr().out
    assert status == 0, out
    assert '0 undocumented' in out
    for group in ('test time', 'training views'):
        assert f'\n{group} (' in out


@needs_reference
@pytest.mark.parametrize('option, checks, row', [
    ('tta_model.crf_cfg.bilateral_srgb=6', 'test_time',
     'test: CRF probabilities, same image and input'),
    ('tta_model.crf_cfg.num_iters=9', 'test_time',
     'test: CRF probabilities, same image and input'),
    ('train_dataloader.dataset.pipeline.3.crop_ratio_range=(0.33,1.0)',
     'training_views', 'views from the same draws'),
    # the two training differences the whole-run comparison led to
    ('model.decode_head.loss_decode.skip_empty_group=True', 'losses',
     'segmentation loss gradient, no foreground pixel'),
    ('model.idle_decoder_steps=False', 'idle_decoder',
     'tensors with a gradient (zeros included) before the decoder starts'),
])
def test_one_step_change_of_the_paper_config_fails(capsys, option, checks,
                                                   row):
    """A CRF setting or the crop scale range one step off: exit 1."""
    status = load_tool().main(['--reference-dir', REFERENCE_DIR, '--checks',
                               checks, '--cfg-options', option])
    out = capsys.readouterr().out
    assert status == 1, out
    failed = [line for line in out.splitlines()
              if line.endswith('DIFFERS, not in the README table')]
    assert any(line.startswith(row) for line in failed), out


@needs_reference
def test_reference_run_trains_both_sides_and_reports(tmp_path):
    """tools/analysis_tools/reference_run.py end to end, 4 iterations."""
    import subprocess
    import sys
    tool = osp.join(osp.dirname(TOOL), 'reference_run.py')
    png = tmp_path / 'curves.png'
    done = subprocess.run(
        [sys.executable, tool, '--reference-dir', REFERENCE_DIR,
         '--work-dir', str(tmp_path / 'run'), '--iters', '4', '--batch', '2',
         '--seeds', '0', '--train-images', '8', '--val-images', '2',
         '--png', str(png)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines()
            if line.startswith(('| authors |', '| ours |'))]
    assert len(rows) == 2 and png.stat().st_size > 0, done.stdout


def test_shared_draws_give_numpy_and_torch_the_same_numbers():
    """The one stream behind both view pipelines' random calls."""
    import numpy as np
    import torch
    tool = load_tool()
    saved = (np.random.uniform, torch.rand, torch.Tensor.uniform_)
    with tool.SharedDraws(7):
        from_numpy = [np.random.uniform(0.32, 1.0), np.random.randint(0, 10),
                      np.random.rand(),
                      np.random.choice(['horizontal', None], p=[0.5, 0.5])]
    with tool.SharedDraws(7):
        from_torch = [torch.empty(1).uniform_(0.32, 1.0).item(),
                      torch.randint(0, 10, size=(1, )).item(),
                      torch.rand(1).item(),
                      'horizontal' if torch.rand(1) < 0.5 else None]
    u = np.random.default_rng(7).random(4)  # the stream, by hand
    assert from_numpy[0] == pytest.approx(0.32 + 0.68 * u[0])
    assert from_numpy[1] == int(10 * u[1]) == from_torch[1]
    assert from_numpy[2] == pytest.approx(u[2])
    assert from_torch[0] == pytest.approx(from_numpy[0], rel=1e-6)
    assert from_torch[2] == pytest.approx(from_numpy[2], rel=1e-6)
    assert from_numpy[3] == from_torch[3] == (
        'horizontal' if u[3] < 0.5 else None)
    assert (np.random.uniform, torch.rand,
            torch.Tensor.uniform_) == saved  # restored


def test_missing_reference_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='no train_voc.py'):
        reference_code.load_reference(str(tmp_path))


def test_missing_dependency_is_named_with_its_pip_package(
        tmp_path, monkeypatch):
    (tmp_path / 'authors_script.py').write_text(
        'import sklearn_not_installed_here\n')
    monkeypatch.setitem(reference_code.PIP_NAMES, 'sklearn_not_installed_here',
                        'scikit-learn')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match='authors_script needs '
                       'sklearn_not_installed_here: pip install scikit-learn'):
        reference_code.import_reference_module(str(tmp_path),
                                               'authors_script')
