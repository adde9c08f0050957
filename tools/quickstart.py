"""CPU quick-start: train FSR on synthetic data, evaluate, draw CAMs.

Generates the synthetic VOC-layout data set (if missing), trains the tiny
CPU config through the mmengine Runner, scores the decoder, CAM and PAR
pseudo labels on the val split against an all-background prediction, and
writes CAM panels (image | CAM per class | CAM label | PAR label |
prediction | ground truth) to ``<work-dir>/cam_panels``.
"""
import argparse
import json
import os.path as osp
import sys
import time

import numpy as np
from mmengine.config import Config
from PIL import Image

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.engine import build_runner
from mmseg_fsr.testing.synthetic import generate_synthetic_voc
from mmseg_fsr.utils.config_utils import set_data_root
from mmseg_fsr.visualization.cam_panel import save_cam_panels

CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))),
    'configs/fsr/fsr_vit-tiny-p8_1xb8-400_synthvoc-64x64.py')


def all_background_miou(dataset) -> float:
    """mIoU (%) of predicting background everywhere, as IoUMetric counts.

    Background IoU is its pixel share among valid pixels; every other class
    present in the ground truth scores 0.
    """
    background = valid = 0
    present = set()
    for info in dataset.load_data_list():
        gt = np.asarray(Image.open(info['seg_map_path']))
        valid_px = gt != 255
        background += int((gt[valid_px] == 0).sum())
        valid += int(valid_px.sum())
        present.update(np.unique(gt[valid_px]).tolist())
    return 100.0 * background / valid / len(present | {0})


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=CONFIG, help='config file')
    parser.add_argument(
        '--data-root',
        default='data/synthetic_voc',
        help='synthetic data folder; generated when missing')
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
    parser.add_argument(
        '--max-iters', type=int, help='override the training length')
    parser.add_argument(
        '--num-panels', type=int, default=8, help='CAM pictures to write')
    return parser.parse_args()


def main() -> int:
    start = time.perf_counter()
    args = parse_args()
    val_list = osp.join(args.data_root, 'ImageSets/Segmentation/val.txt')
    if not osp.isfile(val_list):
        print(json.dumps(generate_synthetic_voc(args.data_root), indent=1))
    cfg = Config.fromfile(args.config)
    set_data_root(cfg, args.data_root)
    cfg.work_dir = args.work_dir
    if args.max_iters:
        # the config's fractions (schedule, loss starts, validation and
        # checkpoint intervals) scale with it
        cfg.train_cfg.max_iters = args.max_iters
    runner = build_runner(cfg)
    runner.train()
    metrics = runner.test()
    baseline = all_background_miou(runner.test_dataloader.dataset)
    runner.model.eval()
    panels = save_cam_panels(runner.model, runner.test_dataloader,
                             osp.join(args.work_dir, 'cam_panels'),
                             args.num_panels)
    summary = {
        'decoder mIoU': float(metrics['mIoU']),
        'CAM pseudo-label mIoU': float(metrics['cam/mIoU']),
        'PAR pseudo-label mIoU': float(metrics['par/mIoU']),
        'all-background mIoU': round(baseline, 2),
        'CAM panels': osp.dirname(panels[0]) if panels else None,
        # the figure the README gives (about 2 on 2 idle CPU cores)
        'minutes': round((time.perf_counter() - start) / 60, 1),
    }
    print(json.dumps(summary, indent=1))
    with open(osp.join(args.work_dir, 'quickstart_summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    if metrics['cam/mIoU'] <= baseline:
        print('CAM pseudo labels do not beat the all-background prediction',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
