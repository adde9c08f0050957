"""Export the pseudo labels of a trained FSR model as VOC palette PNGs.

Runs the model with ``test_cfg.output_cams=True`` over a whole split, one
image at a time at its native size, and writes ``<out-dir>/<image
name>.png``: 8-bit palette PNGs with the data set's palette, 0 =
background, ``c`` = class ``c``, 255 = ignore (VOC's border colour). They
are read back by any mmseg data set as masks, e.g. by the second-stage
configs in ``configs/second_stage/``.

What is written (``--source``):

- ``par`` (default): the PAR-refined CAM pseudo label the decoder trains
  on (``pred_par_label``): CAM scores above ``high_thr`` are foreground,
  at or below ``low_thr`` background, the band between is 255;
- ``cam``: the CAM label (``pred_cam_label``): best image class where its
  CAM exceeds ``pseudo_labeller.eval_bg_thr``, else background; no 255;
- ``--crf`` (implies ``cam``): a dense CRF on the CAMs of the image's own
  classes with a constant background score ``pseudo_labeller.eval_bg_thr``
  in front, the scores divided by their per-pixel sum as probabilities (see
  ``mmseg_fsr.apis.cam_inference.crf_cam_label``); FSR's test CRF
  settings; no 255.

Image-level labels come from the split's masks (``GenerateImageLabels``)
or the data set's ``img_label_file``. When the split's masks exist, the
written labels are read back and scored against them (mIoU, aAcc), as
``PseudoLabelMetric`` scores them during validation.

Examples::

    # VOC train_aug (the config's training split) -> second-stage masks
    python tools/export_pseudo_labels.py \\
        configs/fsr/fsr_vit-b16_4xb2-20k_voc12aug-448x448.py \\
        work_dirs/fsr_vit-b16_4xb2-20k_voc12aug-448x448/iter_20000.pth \\
        --split train --out-dir data/VOCdevkit/VOC2012/FSRPseudoLabels
    # CRF-refined CAM labels of VOC train, CRF in 8 processes
    python tools/export_pseudo_labels.py CONFIG CKPT \\
        --split ImageSets/Segmentation/train.txt --out-dir out/ \\
        --crf --crf-workers 8
"""
import argparse
import os.path as osp
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from typing import Optional


def _import_plugin() -> None:
    try:
        import mmseg_fsr  # noqa: F401
    except ImportError:
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
        import mmseg_fsr  # noqa: F401


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    _import_plugin()
    from mmseg_fsr.utils.checkpoint_fit import add_allow_partial_argument

    parser = argparse.ArgumentParser(
        description='Export FSR pseudo labels as VOC palette PNGs',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('config', help='FSR config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_allow_partial_argument(parser)
    parser.add_argument(
        '--split',
        default='train',
        help="'train' (the config's training data set), 'val', or a split "
        "list (relative to data_root) read with the test data set's "
        'folders. Default: train')
    parser.add_argument('--out-dir', required=True, help='PNG folder')
    parser.add_argument(
        '--source',
        choices=['par', 'cam'],
        help='pseudo label to write: par (PAR-refined, with ignore band; '
        'default) or cam (thresholded CAM)')
    parser.add_argument(
        '--crf',
        action='store_true',
        help='dense-CRF refinement of the CAM (implies --source cam)')
    parser.add_argument(
        '--crf-workers',
        type=int,
        default=0,
        help='CRF processes; 0 runs the CRF in this process')
    parser.add_argument(
        '--data-root', help='run on another data folder of the same layout')
    parser.add_argument(
        '--num-workers', type=int, default=2, help='data loader processes')
    parser.add_argument(
        '--device', help='torch device (default: cuda if available)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, xxx=yyy (e.g. '
        'model.pseudo_labeller.eval_bg_thr=0.45)')
    args = parser.parse_args(argv)
    if args.crf and args.source == 'par':
        parser.error('--crf refines the CAM: it cannot be used with '
                     '--source par')
    args.source = 'cam' if args.crf else (args.source or 'par')
    return args


def main(argv=None) -> Optional[dict]:
    """Export (and score) the pseudo labels.

    Returns:
        dict, optional: ``score_label_files``' mIoU / aAcc of the written
        labels; None without masks.
    """
    args = parse_args(argv)
    _import_plugin()
    import mmengine
    import torch
    from mmengine.utils import ProgressBar

    from mmseg_fsr.apis.cam_inference import (build_split_loader,
                                              export_crf_cam_label,
                                              load_model_and_split,
                                              save_label_png,
                                              score_label_files)

    model, dataset = load_model_and_split(args.config, args.checkpoint,
                                          args.split, args.cfg_options,
                                          args.data_root, args.device,
                                          args.allow_partial_checkpoint)
    palette = dataset.metainfo['palette']
    loader = build_split_loader(dataset, args.num_workers)
    mmengine.mkdir_or_exist(args.out_dir)
    # the background score of the CAM labels
    bg_score = model.pseudo_labeller.eval_bg_thr
    label_key = f'pred_{args.source}_label'

    progress = ProgressBar(len(dataset))
    pool = ProcessPoolExecutor(args.crf_workers) if (
        args.crf and args.crf_workers > 0) else None
    pending = deque()
    with pool or nullcontext(), torch.no_grad():
        for batch in loader:
            for sample in model.test_step(batch):
                name = osp.splitext(osp.basename(sample.img_path))[0]
                out_path = osp.join(args.out_dir, f'{name}.png')
                if not args.crf:
                    save_label_png(
                        sample.get(label_key).data[0].cpu().numpy(),
                        out_path, palette)
                    progress.update()
                    continue
                job = (sample.img_path, sample.pred_cams.data.cpu().numpy(),
                       sample.gt_class_labels.cpu().numpy(), bg_score,
                       out_path, palette)
                if pool is None:
                    export_crf_cam_label(*job)
                    progress.update()
                    continue
                pending.append(pool.submit(export_crf_cam_label, *job))
                # Bounded queue: CAMs of waiting images stay in memory.
                while len(pending) > 2 * args.crf_workers:
                    pending.popleft().result()
                    progress.update()
        while pending:
            pending.popleft().result()
            progress.update()
    print(f'\n{len(dataset)} pseudo labels ({args.source}'
          f'{" + CRF" if args.crf else ""}) written to {args.out_dir}')
    scores = score_label_files(dataset, args.out_dir)
    if scores is None:
        print('no ground-truth masks for this split: labels not scored')
    else:
        print(f'written labels against the masks of {scores["num_images"]} '
              f'images: mIoU {scores["mIoU"]:.2f}, aAcc {scores["aAcc"]:.2f}')
    return scores


if __name__ == '__main__':
    main()
