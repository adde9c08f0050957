"""Draw CAM panels of a trained FSR model.

One PNG per image in ``--out-dir``: the image, the CAM of every class in
its image-level label, then the CAM label, the PAR-refined pseudo label,
the decoder's prediction and the ground truth (white = ignore), each under
a title strip (the image name, ``CAM <class>``, ...). Training draws the
same panels with ``WSSSVisualizationHook``.

Examples::

    # the first 8 images of the config's validation split
    python tools/analysis_tools/visualize_cams.py CONFIG CKPT --out-dir vis/
    # chosen images (names as in the split list) of the training split
    python tools/analysis_tools/visualize_cams.py CONFIG CKPT --out-dir vis/ \\
        --split train --img-names 2007_000032 2007_000039
"""
import argparse
import os.path as osp
import sys


def _import_plugin() -> None:
    try:
        import mmseg_fsr  # noqa: F401
    except ImportError:
        sys.path.insert(
            0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
        import mmseg_fsr  # noqa: F401


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    _import_plugin()
    from mmseg_fsr.utils.checkpoint_fit import add_allow_partial_argument

    parser = argparse.ArgumentParser(
        description='Draw CAM panels of an FSR model',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('config', help='FSR config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_allow_partial_argument(parser)
    parser.add_argument('--out-dir', required=True, help='panel folder')
    parser.add_argument(
        '--img-names', nargs='+', help='image names (file name, no suffix)')
    parser.add_argument(
        '--num',
        type=int,
        help='panels to draw (default: all --img-names, else 8)')
    parser.add_argument(
        '--split',
        default='val',
        help="'train', 'val' or a split list, as in "
        'tools/export_pseudo_labels.py. Default: val')
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
        help='override config settings, xxx=yyy')
    return parser.parse_args(argv)


def main(argv=None) -> list:
    """Draw the panels; returns the paths written."""
    args = parse_args(argv)
    _import_plugin()
    from mmseg_fsr.apis.cam_inference import (
        build_split_loader, load_model_and_split)
    from mmseg_fsr.visualization.cam_panel import save_cam_panels

    model, dataset = load_model_and_split(args.config, args.checkpoint,
                                          args.split, args.cfg_options,
                                          args.data_root, args.device,
                                          args.allow_partial_checkpoint)
    if args.img_names:
        index = {
            osp.splitext(osp.basename(
                dataset.get_data_info(i)['img_path']))[0]: i
            for i in range(len(dataset))
        }
        missing = [name for name in args.img_names if name not in index]
        if missing:
            raise KeyError(f'not in the {args.split} split: {missing}')
        dataset = dataset.get_subset([index[n] for n in args.img_names])
    num = args.num or (len(args.img_names) if args.img_names else 8)
    written = save_cam_panels(model,
                              build_split_loader(dataset, args.num_workers),
                              args.out_dir, num)
    print(f'{len(written)} CAM panels written to {args.out_dir}')
    return written


if __name__ == '__main__':
    main()
