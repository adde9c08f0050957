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


@pytest.mark.skipif(not REFERENCE_DIR,
                    reason="FSR_REFERENCE_DIR (the authors' code) not set")
def test_every_row_equal_or_documented(capsys):
    spec = importlib.util.spec_from_file_location('reference_parity', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    status = tool.main(['--reference-dir', REFERENCE_DIR])
    out = capsys.readouterr().out
    assert status == 0, out
    assert '0 undocumented' in out


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
