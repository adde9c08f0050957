"""tools/test.py --tta with CRF, pseudo-label export, CAM panels and the
second-stage configs, end to end on synthetic data (nothing is trained:
an initialised tiny FSR model is saved as the checkpoint)."""
import glob
import importlib.util
import json
import os
import os.path as osp
import socket
from urllib.error import URLError

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import DATASETS, MODELS
from PIL import Image

from mmseg_fsr.apis.cam_inference import (
    build_cam_model, build_split_loader, crf_cam_label, split_dataset_cfg)
from mmseg_fsr.evaluation.metrics import PseudoLabelMetric
from mmseg_fsr.models.utils.dense_crf import read_rgb_image
from mmseg_fsr.testing import PAPER_CONFIG, tiny_fsr_config
from mmseg_fsr.utils.config_utils import set_data_root
from mmseg_fsr.visualization import TITLE_HEIGHT

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# every FSR config's --tta is the paper's recipe
TTA_CONFIG = PAPER_CONFIG
SECOND_STAGE = [
    'configs/second_stage/'
    'deeplabv3plus_r101-d8_4xb4-20k_voc12aug-512x512_fsr-pseudo.py',
    'configs/second_stage/'
    'segformer_mit-b1_4xb4-20k_voc12aug-512x512_fsr-pseudo.py',
]
PSEUDO_DIR = 'FSRPseudoLabels'  # the second-stage configs' folder
TINY_SECOND_STAGE = ('configs/second_stage/deeplabv3plus_r18-d8_1xb4-200_'
                     'synthvoc-64x64_fsr-pseudo.py')


def load_tool(rel_path):
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(rel_path))[0], osp.join(REPO, rel_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def data_root(synthetic_voc, tmp_path_factory):
    """A few images of the synthetic data, seen through links, so that
    exports can go to ``<data_root>/FSRPseudoLabels`` without touching the
    shared folder."""
    root = tmp_path_factory.mktemp('voc_links')
    for folder in ('JPEGImages', 'SegmentationClass', 'SegmentationClassAug'):
        os.symlink(osp.join(synthetic_voc, folder), root / folder)
    sets = root / 'ImageSets' / 'Segmentation'
    sets.mkdir(parents=True)
    for split, num in (('train', 4), ('aug', 4), ('val', 2)):
        src = osp.join(synthetic_voc, 'ImageSets/Segmentation', f'{split}.txt')
        with open(src) as f:
            names = f.read().split()[:num]
        (sets / f'{split}.txt').write_text('\n'.join(names) + '\n')
    return str(root)


@pytest.fixture(scope='module')
def run(data_root, tmp_path_factory):
    """Config file and checkpoint of the tiny FSR model, and its config."""
    work = tmp_path_factory.mktemp('tiny_run')
    cfg = tiny_fsr_config(data_root, str(work / 'work'), max_iters=1)
    config = str(work / 'tiny_fsr.py')
    cfg.dump(config)
    model = MODELS.build(cfg.model)
    model.init_weights()
    checkpoint = str(work / 'tiny_fsr.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    return config, checkpoint, cfg


@pytest.fixture(scope='module')
def val_outputs(run):
    """{image name: data sample} of the CAM model on val, and the data set."""
    _, checkpoint, cfg = run
    model = build_cam_model(cfg, checkpoint, 'cpu')
    dataset = DATASETS.build(split_dataset_cfg(cfg, 'val'))
    outputs = {}
    with torch.no_grad():
        for batch in build_split_loader(dataset, num_workers=0):
            for sample in model.test_step(batch):
                name = osp.splitext(osp.basename(sample.img_path))[0]
                outputs[name] = sample
    return outputs, dataset


def read_png(path):
    png = Image.open(path)
    assert png.mode == 'P'
    return np.array(png), png.getpalette()


def test_test_tool_tta_crf(run, tmp_path):
    """tools/test.py --tta on the tiny config given the paper's TTA + CRF
    settings (3 scales x 2 flips, CRF in 2 worker processes)."""
    config, checkpoint, cfg = run
    paper = Config.fromfile(TTA_CONFIG)
    cfg.tta_pipeline = paper.tta_pipeline
    cfg.tta_model = paper.tta_model
    cfg.tta_model.crf_workers = 2
    tta_config = str(tmp_path / 'tiny_tta_crf.py')
    cfg.dump(tta_config)

    load_tool('tools/test.py').main(
        [tta_config, checkpoint, '--tta', '--work-dir', str(tmp_path)])

    logs = glob.glob(str(tmp_path / '*' / '*.json'))
    assert len(logs) == 1
    with open(logs[0]) as f:
        metrics = json.loads(f.readlines()[-1])
    # decoder (merged + CRF) and, from the unflipped scale-1.0 view, CAMs
    for key in ('mIoU', 'cam/mIoU', 'par/mIoU'):
        assert 0 <= metrics[key] <= 100


def test_export_par_labels_round_trip(run, val_outputs, tmp_path):
    config, checkpoint, _ = run
    out_dir = tmp_path / 'par'
    scores = load_tool('tools/export_pseudo_labels.py').main([
        config, checkpoint, '--split', 'val', '--out-dir',
        str(out_dir), '--num-workers', '0'
    ])
    outputs, dataset = val_outputs
    # what was written scores as PseudoLabelMetric scores the model's labels
    metric = PseudoLabelMetric(pred_key='pred_par_label')
    metric.dataset_meta = dataset.metainfo
    metric.process({}, [s.to_dict() for s in outputs.values()])
    expected = metric.compute_metrics(metric.results)
    assert scores['num_images'] == len(outputs)
    assert scores['mIoU'] == pytest.approx(expected['mIoU'], abs=0.01)
    assert scores['aAcc'] == pytest.approx(expected['aAcc'], abs=0.01)
    assert sorted(os.listdir(out_dir)) == sorted(f'{n}.png' for n in outputs)
    palette = np.asarray(dataset.metainfo['palette']).reshape(-1)
    for name, sample in outputs.items():
        label, png_palette = read_png(out_dir / f'{name}.png')
        expected = sample.pred_par_label.data[0].numpy()
        np.testing.assert_array_equal(label, expected)
        assert png_palette[:palette.size] == palette.tolist()
    # the ignore band survives the PNG round trip
    assert any((s.pred_par_label.data == 255).any() for s in outputs.values())


def test_export_cam_and_crf_labels(run, val_outputs, tmp_path):
    config, checkpoint, cfg = run
    tool = load_tool('tools/export_pseudo_labels.py')
    common = [config, checkpoint, '--split', 'val', '--num-workers', '0']
    tool.main(common + ['--source', 'cam', '--out-dir', str(tmp_path / 'c')])
    tool.main(common + [
        '--crf', '--crf-workers', '2', '--out-dir',
        str(tmp_path / 'crf')
    ])
    with pytest.raises(SystemExit):
        tool.parse_args(common + ['--out-dir', 'x', '--crf', '--source',
                                  'par'])

    outputs, _ = val_outputs
    for name, sample in outputs.items():
        cam_label, _ = read_png(tmp_path / 'c' / f'{name}.png')
        np.testing.assert_array_equal(cam_label,
                                      sample.pred_cam_label.data[0].numpy())
        crf_label, _ = read_png(tmp_path / 'crf' / f'{name}.png')
        img_labels = sample.gt_class_labels.numpy()
        expected = crf_cam_label(
            read_rgb_image(sample.img_path), sample.pred_cams.data.numpy(),
            img_labels, cfg.model.pseudo_labeller.eval_bg_thr)
        np.testing.assert_array_equal(crf_label, expected)
        # only background and the image's own classes
        allowed = {0} | set((np.flatnonzero(img_labels) + 1).tolist())
        assert set(np.unique(crf_label).tolist()) <= allowed


def test_crf_cam_label_without_crf_effect_is_cam_label(monkeypatch):
    """The CRF input's argmax is the CAM label (cams_to_labels)."""
    import mmseg_fsr.apis.cam_inference as cam_inference
    monkeypatch.setattr(cam_inference, 'dense_crf',
                        lambda image, probs, **kw: probs)
    g = np.random.default_rng(0)
    cams = g.random((4, 6, 7)).astype(np.float32)
    img_labels = np.array([0, 1, 0, 1], np.float32)
    label = cam_inference.crf_cam_label(
        np.zeros((6, 7, 3), np.uint8), cams, img_labels, 0.45)
    scores = cams * img_labels[:, None, None]
    expected = np.where(scores.max(0) <= 0.45, 0, scores.argmax(0) + 1)
    np.testing.assert_array_equal(label, expected)


def test_visualize_cams_named_images(run, tmp_path, data_root):
    config, checkpoint, _ = run
    with open(osp.join(data_root, 'ImageSets/Segmentation/val.txt')) as f:
        names = f.read().split()[:2]
    written = load_tool('tools/analysis_tools/visualize_cams.py').main([
        config, checkpoint, '--out-dir',
        str(tmp_path), '--img-names', *names, '--num-workers', '0'
    ])
    assert [osp.basename(p) for p in written] == [f'{n}.png' for n in names]
    panel = np.array(Image.open(written[0]))
    # a title strip over: image + >= 1 CAM + CAM label + PAR label +
    # prediction + ground truth
    assert panel.shape[0] == TITLE_HEIGHT + 64
    assert panel.shape[1] % 64 == 0 and panel.shape[1] >= 6 * 64
    titles = np.split(panel[:TITLE_HEIGHT], panel.shape[1] // 64, axis=1)
    assert all((title > 128).sum() > 10 for title in titles)


@pytest.fixture(scope='module')
def pseudo_dir(run, data_root):
    """The tiny FSR model's PAR labels of train_aug, where the second-stage
    configs read them."""
    fsr_config, checkpoint, _ = run
    out_dir = osp.join(data_root, PSEUDO_DIR)
    load_tool('tools/export_pseudo_labels.py').main([
        fsr_config, checkpoint, '--split', 'train', '--out-dir', out_dir,
        '--num-workers', '0'
    ])
    return out_dir


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline: every connection fails, and an empty torch cache cannot
    serve a download."""

    def refuse(*args, **kwargs):
        raise OSError('network access in an offline test')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))


@pytest.mark.parametrize('config', SECOND_STAGE)
def test_second_stage_trains_on_exported_labels(config, pseudo_dir,
                                                data_root, tmp_path):
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(REPO, config))
    set_data_root(cfg, data_root)
    # every image of the train_aug list reads an exported PNG, once
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    names = open(osp.join(data_root, 'ImageSets/Segmentation/aug.txt')).read()
    assert len(dataset) == len(names.split())
    for i in range(len(dataset)):
        seg_map = dataset.get_data_info(i)['seg_map_path']
        assert osp.dirname(seg_map) == pseudo_dir
        assert osp.isfile(seg_map)

    # the recipe (transforms, optimiser, schedule) with a tiny stock model
    # at 64x64 crops
    shrink_second_stage(cfg, crop=64)
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg.max_iters = 1
    cfg.train_dataloader.update(
        batch_size=2, num_workers=0, persistent_workers=False)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint.save_last = False
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert np.isfinite(loss)


def shrink_second_stage(cfg, crop):
    """Shrink the config's own model type to a few thousand parameters and
    its training crops from 512 to ``crop``."""
    for transform in cfg.train_dataloader.dataset.pipeline:
        if transform.type == 'RandomResize':
            transform.scale = (4 * crop, crop)
        elif transform.type == 'RandomCrop':
            transform.crop_size = (crop, crop)
        elif transform.type == 'Pad':
            transform.size = (crop, crop)
    model = cfg.model
    model.data_preprocessor.size = (crop, crop)
    model.pretrained = None
    model.backbone.init_cfg = None
    if model.backbone.type == 'ResNetV1c':
        model.backbone.update(depth=18, stem_channels=8, base_channels=8)
        model.decode_head.update(
            in_channels=64, channels=8, c1_in_channels=8, c1_channels=4)
        model.auxiliary_head.update(in_channels=32, channels=8)
    else:  # MixVisionTransformer
        model.backbone.update(
            embed_dims=8, num_heads=[1, 1, 1, 1], num_layers=[1, 1, 1, 1])
        model.decode_head.update(in_channels=[8, 8, 8, 8], channels=8)


def test_tiny_second_stage_trains_offline(pseudo_dir, data_root, tmp_path,
                                          no_network):
    """The CPU second-stage config as it is, short: train on the exported
    labels, validate on the real masks, download nothing."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(REPO, TINY_SECOND_STAGE))
    set_data_root(cfg, data_root)
    cfg.work_dir = str(tmp_path)
    # as --cfg-options does: the schedule follows the shortened run
    cfg.merge_from_dict({
        'train_cfg.max_iters': 2,
        'train_cfg.val_interval': 2
    })
    cfg.train_dataloader.update(
        batch_size=2, num_workers=0, persistent_workers=False)
    cfg.val_dataloader.num_workers = 0
    cfg.default_hooks.checkpoint.interval = 2
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    # PolyLR decayed all the way over the 2 iterations, not 2 of 200
    [poly] = runner.param_schedulers
    assert (poly.begin, poly.end) == (0, 2)
    assert runner.optim_wrapper.get_lr()['lr'][0] == pytest.approx(
        poly.eta_min)
    assert runner.train_dataloader.dataset.get_data_info(0)[
        'seg_map_path'].startswith(pseudo_dir)
    assert np.isfinite(
        runner.message_hub.get_scalar('train/loss').current())
    assert 0 <= runner.message_hub.get_scalar('val/mIoU').current() <= 100
    assert osp.isfile(osp.join(tmp_path, 'iter_2.pth'))


@pytest.mark.parametrize('config', SECOND_STAGE)
@pytest.mark.parametrize('weights', [None, 'stock', 'local'])
def test_second_stage_offline_overrides(config, weights, no_network,
                                        tmp_path):
    """docs/second_stage.md's offline --cfg-options: no weights, or a local
    file; the stock configs download (and fail here)."""
    key = ('model.pretrained' if 'deeplabv3plus' in config else
           'model.backbone.init_cfg' + ('.checkpoint' if weights else ''))
    local = str(tmp_path / 'backbone.pth')
    options = {
        None: ['--cfg-options', f'{key}=None'],
        'stock': [],
        'local': ['--cfg-options', f'{key}={local}'],
    }[weights]
    args = load_tool('tools/train.py').parse_args(
        [osp.join(REPO, config)] + options)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    name = 'stem.0.weight' if 'deeplabv3plus' in config else \
        'layers.0.0.projection.weight'
    param = model.backbone.state_dict()[name]
    # a backbone file of one tensor (loading is not strict)
    torch.save(dict(state_dict={name: torch.full_like(param, 0.5)}), local)
    if weights == 'stock':
        with pytest.raises(URLError, match='offline test'):
            model.init_weights()
        return
    model.init_weights()
    assert (param == 0.5).all() == (weights == 'local')
