"""Every config in configs/fsr with MMSeg's own entry points.

``init_model`` + ``inference_model`` (and ``demo/image_demo.py``'s
``show_result_pyplot``), ``MMSegInferencer``, mmseg's
``tools/analysis_tools/browse_dataset.py`` and mmseg's ``tools/test.py
--show-dir`` (what ``mim test mmsegmentation`` runs), on VOC- and
COCO-layout folders of a few odd-sized synthetic images. No weights are
trained: the checkpoint holds no tensors (the Runner loads it non-strictly),
so each config runs at its own size with its seeded initial weights.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import runpy
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.visualization import Visualizer
from mmseg.apis import (MMSegInferencer, inference_model, init_model,
                        show_result_pyplot)
from mmseg.visualization import SegLocalVisualizer
from PIL import Image

import mmseg
from mmseg_fsr.testing import generate_synthetic_voc
from mmseg_fsr.utils.config_utils import set_data_root
from mmseg_fsr.visualization import WSSSLocalVisualizer

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs/fsr/**/*.py'), recursive=True))
MMSEG_TOOLS = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')
CPU_CONFIG = 'configs/fsr/fsr_vit-tiny-p8_1xb8-400_synthvoc-64x64.py'
DEIT_CONFIG = ('configs/fsr/examples/'
               'fsr_mmpretrain-deit-s_aspp_4xb2-20k_voc12aug-448x448.py')
IMG_SIZE = (61, 83)  # a multiple of no patch size


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('entry_voc'))
    generate_synthetic_voc(root, num_train=2, num_val=2, img_size=IMG_SIZE)
    return root


@pytest.fixture(scope='module')
def coco_root(voc_root, tmp_path_factory) -> str:
    """The same images in the layout of tools/dataset_converters/
    coco2014_wsss.py (VOC class ids are valid COCO ids)."""
    root = tmp_path_factory.mktemp('entry_coco')
    labels = {}
    for split in ('train', 'val'):
        with open(osp.join(voc_root, f'ImageSets/Segmentation/{split}.txt')) \
                as f:
            names = f.read().split()
        (root / f'{split}2014').mkdir()
        (root / 'SegmentationClass' / f'{split}2014').mkdir(parents=True)
        for name in names:
            os.symlink(osp.join(voc_root, 'JPEGImages', f'{name}.jpg'),
                       root / f'{split}2014' / f'{name}.jpg')
            mask = osp.join(voc_root, 'SegmentationClass', f'{name}.png')
            os.symlink(mask,
                       root / 'SegmentationClass' / f'{split}2014' /
                       f'{name}.png')
            ids = np.unique(np.array(Image.open(mask)))
            labels[name] = [int(i) for i in ids if 0 < i < 255]
        (root / 'ImageSets').mkdir(exist_ok=True)
        for list_name in ((split, 'val_5k') if split == 'val' else (split, )):
            (root / 'ImageSets' / f'{list_name}.txt').write_text(
                '\n'.join(names) + '\n')
    (root / 'cls_labels_coco.json').write_text(json.dumps(labels))
    return str(root)


@pytest.fixture
def config_file(request, voc_root, coco_root, tmp_path):
    """The config at ``request.param`` pointed at the synthetic data and
    written to a file, with its Config and an empty checkpoint."""
    cfg = Config.fromfile(osp.join(REPO, request.param))
    set_data_root(cfg, coco_root if 'coco' in request.param else voc_root)
    path = str(tmp_path / osp.basename(request.param))
    cfg.dump(path)
    checkpoint = str(tmp_path / 'empty.pth')
    torch.save(dict(state_dict={}, meta={}), checkpoint)
    return path, cfg, checkpoint


def first_val_image(cfg: Config) -> str:
    dataset = cfg.test_dataloader.dataset
    return sorted(
        glob.glob(
            osp.join(dataset.data_root, dataset.data_prefix.img_path,
                     '*.jpg')))[0]


def load_project_tool(rel_path: str):
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(rel_path))[0], osp.join(REPO, rel_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_mmseg_tool(rel_path: str, argv: list) -> None:
    """Run one of mmseg's own tools as ``python <tool> argv`` would, in a
    fresh process: with no visualiser left by an earlier tool (mmengine
    hands an existing instance of the same name back, old save_dir and
    all)."""
    for manager in (Visualizer, SegLocalVisualizer, WSSSLocalVisualizer):
        manager._instance_dict.clear()
    script = osp.join(MMSEG_TOOLS, rel_path)
    old_argv = sys.argv
    sys.argv = [script] + argv
    try:
        runpy.run_path(script, run_name='__main__')
    finally:
        sys.argv = old_argv


@pytest.mark.parametrize('config_file', CONFIGS, indirect=True)
def test_init_model_and_inferencer(config_file, tmp_path):
    path, cfg, checkpoint = config_file
    image = first_val_image(cfg)
    torch.manual_seed(0)  # the same initial weights in both models
    model = init_model(path, checkpoint, device='cpu')
    result = inference_model(model, image)
    assert result.pred_sem_seg.shape == IMG_SIZE
    # demo/image_demo.py
    out_file = str(tmp_path / 'demo.png')
    show_result_pyplot(model, image, result, show=False, out_file=out_file)
    with Image.open(out_file) as drawn:
        assert drawn.size == IMG_SIZE[::-1]

    torch.manual_seed(0)
    inferencer = MMSegInferencer(model=path, weights=checkpoint,
                                 device='cpu')
    outputs = inferencer(image, out_dir=str(tmp_path / 'inferencer'),
                         return_datasamples=True)
    assert torch.equal(outputs.pred_sem_seg.data, result.pred_sem_seg.data)
    assert len(glob.glob(str(tmp_path / 'inferencer' / 'vis' / '*'))) == 1


@pytest.mark.parametrize('config_file', CONFIGS, indirect=True)
def test_browse_dataset(config_file, tmp_path, monkeypatch):
    path, cfg, _ = config_file
    out_dir = tmp_path / 'browse'
    shown = {}  # out file name -> the RGB view the tool passed to draw
    add_datasample = SegLocalVisualizer.add_datasample

    def record(self, name, image, *args, **kwargs):
        shown[name] = image.copy()
        return add_datasample(self, name, image, *args, **kwargs)

    monkeypatch.setattr(SegLocalVisualizer, 'add_datasample', record)
    run_mmseg_tool('analysis_tools/browse_dataset.py',
                   [path, '--not-show', '--output-dir', str(out_dir)])
    # one picture per training image: view 1 of its two views
    crop = cfg.train_pipeline[-2].crop_size
    written = sorted(out_dir.iterdir())
    assert len(written) == 2 and {p.name for p in written} == shown.keys()
    for picture in written:
        with Image.open(picture) as drawn:
            assert drawn.size == (crop, crop)
            drawn = np.asarray(drawn.convert('RGB'))
        # the view at its brightness (up to the JPEG the tool writes): the
        # label-free placeholder mask is not blended in (mmseg's visualiser
        # would give a fifth of it)
        view = shown[picture.name].astype(float)
        assert view.mean() > 10
        assert drawn.mean() == pytest.approx(view.mean(), rel=0.02)


@pytest.mark.parametrize('config_file', CONFIGS, indirect=True)
def test_mmseg_test_show_dir(config_file, tmp_path):
    path, cfg, checkpoint = config_file
    run_mmseg_tool('test.py', [
        path, checkpoint, '--show-dir', str(tmp_path / 'shown'),
        '--work-dir', str(tmp_path / 'work')
    ])
    # every test image is drawn, not every 50th
    shown = glob.glob(str(tmp_path / 'shown' / '**' / '*.png'),
                      recursive=True)
    assert len(shown) == 2


@pytest.mark.parametrize('config', CONFIGS)
def test_tta_is_the_paper_recipe(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    assert cfg.tta_model.type == 'CRFSegTTAModel'
    assert (cfg.tta_model['merge'], cfg.tta_model.crf) == ('max', True)
    scales, flips = cfg.tta_pipeline[1].transforms[:2]
    assert [t.scale_factor for t in scales] == [1.0, 1.25, 1.5]
    assert [t.prob for t in flips] == [0., 1.]
    # the model's pre-processing, whichever of the two mmengine hands on
    assert cfg.data_preprocessor == cfg.model.data_preprocessor


@pytest.mark.parametrize('config_file', [CPU_CONFIG, DEIT_CONFIG],
                         indirect=True)
def test_one_view_tta_predicts_as_the_plain_test(config_file, tmp_path):
    """--tta with one scale, no flip and no CRF runs the plain test's
    pre-processing: identical predictions on odd-sized images."""
    path, cfg, checkpoint = config_file
    cfg.tta_pipeline[1].transforms[0] = cfg.tta_pipeline[1].transforms[0][:1]
    cfg.tta_pipeline[1].transforms[1] = cfg.tta_pipeline[1].transforms[1][:1]
    cfg.tta_model.crf = False
    cfg.dump(path)
    predictions = {}
    # the project's tools/test.py: mmseg's writes --out into a single
    # evaluator dict, and these configs list four metrics
    test_tool = load_project_tool('tools/test.py')
    for mode, extra in (('plain', []), ('tta', ['--tta'])):
        out = tmp_path / mode
        torch.manual_seed(0)
        # the empty checkpoint: the same seeded initial weights in both runs
        test_tool.main([
            path, checkpoint, '--out', str(out), '--work-dir',
            str(tmp_path / f'work_{mode}'), '--allow-partial-checkpoint',
            *extra
        ])
        predictions[mode] = {
            p.name: np.array(Image.open(p))
            for p in sorted(out.glob('*.png'))
        }
    assert len(predictions['plain']) == 2
    assert predictions['plain'].keys() == predictions['tta'].keys()
    for name, label in predictions['plain'].items():
        assert label.shape == IMG_SIZE
        np.testing.assert_array_equal(predictions['tta'][name], label)
