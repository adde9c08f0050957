"""Inference speed: images/s plain, with TTA, with TTA + dense CRF, and of
the authors' test script.

Runs the config's test data loader through ``model.test_step`` and reports
images per second (data loading included, as ``tools/test.py`` sees it)
after ``--warmup`` batches, for every mode asked for:

- ``plain``: the config's model (single scale);
- ``tta`` (``--tta``): the config's ``tta_model`` and ``tta_pipeline`` (the
  paper's recipe: scales 1.0 / 1.25 / 1.5 with flips), with the CRF
  switched off when the TTA model has one (``CRFSegTTAModel``);
- ``tta+crf`` (``--tta`` and a ``CRFSegTTAModel``): the same with the CRF,
  once per worker count of ``--crf-workers`` (default: the config's). The
  loader's batch size is set to the worker count (at least 1): that many
  CRFs are in flight while the next images are inferred;
- ``authors`` (``--reference-dir``): the authors' ``infer_voc.py`` on the
  same images (after the same warm-up), imported from a local checkout of
  their code: their network at the config's ViT size, their per-image
  multi-scale + flip loop (without drawing CAM pictures), then their
  joblib CRF pass over the saved logits. Their network is randomly
  initialised.

Without a checkpoint the weights are random, which changes nothing for
speed. ``--vit E L H`` resizes the config's ViT (width, layers, heads).

Example::

    python tools/analysis_tools/benchmark_test.py \
        configs/fsr/fsr_vit-b16_4xb2-20k_voc12aug-448x448.py \
        work_dirs/fsr/iter_20000.pth --tta --crf-workers 0 1 2 4 \
        --reference-dir ../feature-self-reinforcement
"""
import argparse
import copy
import json
import os.path as osp
import sys
import time
from typing import Dict, List, Optional


def _import_plugin():
    try:
        import mmseg_fsr  # noqa: F401
    except ImportError:
        sys.path.insert(
            0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
        import mmseg_fsr  # noqa: F401


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (optional)')
    parser.add_argument('--tta', action='store_true',
                        help='also time the config\'s tta_model')
    parser.add_argument('--crf-workers', type=int, nargs='+',
                        help='CRF worker counts to time (needs --tta and a '
                        'CRFSegTTAModel); 0 = CRF in the main process')
    parser.add_argument('--num-images', type=int, default=20,
                        help='timed images per mode')
    parser.add_argument('--warmup', type=int, default=1,
                        help='batches run before timing')
    parser.add_argument('--device', help='default: cuda if available')
    parser.add_argument('--data-root', help='data folder of the same layout')
    parser.add_argument('--vit', type=int, nargs=3,
                        metavar=('EMBED_DIMS', 'LAYERS', 'HEADS'),
                        help='resize the config\'s ViT')
    parser.add_argument(
        '--reference-dir',
        help="a checkout of the authors' code to time their test script")
    parser.add_argument('--work-dir', default='work_dirs/benchmark_test',
                        help="where the authors' script writes its outputs")
    parser.add_argument('--json', help='write the results here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides, key=value, merged into the config')
    args = parser.parse_args(argv)
    if args.crf_workers is not None and not args.tta:
        parser.error('--crf-workers needs --tta')
    if args.reference_dir and args.num_images < 2:
        parser.error("--reference-dir: the authors' script reads a one-line "
                     'name list as no list; time two images or more')
    return args


def _num_images(batch: dict) -> int:
    samples = batch['data_samples']
    # TTA batches are lists over augmentations of lists over images
    return len(samples[0]) if isinstance(samples[0],
                                         (list, tuple)) else len(samples)


def time_mode(model_cfg, loader_cfg, checkpoint: Optional[str], device,
              num_images: int, warmup: int) -> Dict[str, float]:
    """Images/s of one model on one loader.

    Returns:
        dict: ``images``, ``seconds``, ``images_per_s``.
    """
    import torch
    from mmengine.runner import Runner, load_checkpoint
    from mmseg.registry import MODELS

    from benchmark_utils import synchronize

    model = MODELS.build(model_cfg).to(device).eval()
    if checkpoint:
        # a TTA model holds the segmentor as ``module``
        load_checkpoint(getattr(model, 'module', model), checkpoint,
                        map_location='cpu')
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    images, seconds = 0, 0.0
    batches = iter(loader)
    with torch.no_grad():
        for _ in range(warmup):
            model.test_step(next(batches))
        while images < num_images:
            synchronize(device)
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            model.test_step(batch)
            synchronize(device)
            seconds += time.perf_counter() - start
            images += _num_images(batch)
    pool = getattr(model, '_crf_pool', None)
    if pool is not None:
        pool.shutdown()  # CRFSegTTAModel starts its pool lazily, never stops
    if not images:
        raise ValueError('no image left to time after the warm-up: lower '
                         '--warmup or use a larger test set')
    return dict(images=images, seconds=seconds,
                images_per_s=images / seconds)


def build_modes(cfg, args) -> Dict[str, tuple]:
    """(model config, loader config) of every mode to time."""
    modes = {'plain': (cfg.model, cfg.test_dataloader)}
    if not args.tta:
        return modes
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise KeyError('--tta needs `tta_model` and `tta_pipeline` in the '
                       f'config {args.config}')
    tta_loader = copy.deepcopy(cfg.test_dataloader)
    tta_loader.dataset.pipeline = cfg.tta_pipeline
    tta_model = copy.deepcopy(cfg.tta_model)
    tta_model.module = cfg.model
    has_crf = 'crf' in tta_model
    if has_crf:
        tta_model.crf = False
    modes['tta'] = (tta_model, tta_loader)
    if not has_crf:
        if args.crf_workers is not None:
            raise KeyError(f'{tta_model.type} has no CRF (`crf` key) to '
                           'time with --crf-workers')
        return modes
    workers: List[int] = args.crf_workers or [tta_model.get('crf_workers', 0)]
    for n in workers:
        crf_model = copy.deepcopy(tta_model)
        crf_model.update(crf=True, crf_workers=n)
        crf_loader = copy.deepcopy(tta_loader)
        crf_loader.batch_size = max(1, n)
        modes[f'tta+crf(workers={n})'] = (crf_model, crf_loader)
    return modes


def time_authors(cfg, args) -> Dict[str, float]:
    """The authors' test script on the images the other modes time."""
    import torch
    from mmseg.registry import DATASETS

    from reference_code import (build_reference_network, load_reference,
                                time_authors_inference)

    backbone = cfg.model.backbone
    if backbone.get('patch_size') != 16:
        raise ValueError("the authors' ViT has 16-px patches; the config's "
                         f"has {backbone.get('patch_size')}: use a config "
                         'with patch_size=16')
    R = load_reference(args.reference_dir)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    names = [
        osp.splitext(osp.basename(dataset.get_data_info(i)['img_path']))[0]
        for i in range(min(len(dataset), args.warmup + args.num_images))
    ]
    projector = cfg.model.aggregation_head.projector
    torch.manual_seed(0)
    network = build_reference_network(
        R, cfg.crop_size, backbone.embed_dims, backbone.num_layers,
        backbone.num_heads, projector.out_channels,
        projector.hidden_channels, projector.bottleneck_channels,
        cfg.model.decode_head.num_classes, drop_path=0.0)
    if args.warmup:
        # their name-list reader (np.loadtxt) cannot read a one-line list
        time_authors_inference(R, network, dataset.data_root,
                               names[:max(args.warmup, 2)],
                               osp.join(args.work_dir, 'authors_warmup'))
    timing = time_authors_inference(R, network, dataset.data_root,
                                    names[args.warmup:],
                                    osp.join(args.work_dir, 'authors'))
    seconds = timing['seconds_network'] + timing['seconds_crf']
    return dict(timing, seconds=seconds,
                images_per_s=timing['images'] / seconds)


def report(result: Dict) -> None:
    """Print images/s per mode and each CRF mode's speed-up over the
    authors' script."""
    modes = result['modes']
    for name, timing in modes.items():
        print(f'{name:<24}{timing["images_per_s"]:8.2f} images/s '
              f'({timing["images"]} images in {timing["seconds"]:.1f} s)')
    if 'authors' not in modes:
        return
    authors = modes['authors']
    print(f'  the authors\' network pass {authors["seconds_network"]:.1f} s, '
          f'CRF pass {authors["seconds_crf"]:.1f} s '
          f'({authors["crf_jobs"]} joblib jobs)')
    result['speedup_over_authors'] = {
        name: timing['images_per_s'] / authors['images_per_s']
        for name, timing in modes.items() if name.startswith('tta+crf')
    }
    for name, value in result['speedup_over_authors'].items():
        print(f'{name} / authors: {value:.2f}x images/s')


def main(argv=None) -> Dict:
    args = parse_args(argv)
    _import_plugin()
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from benchmark_utils import scale_vit, use_quiet_logger
    from mmseg_fsr.utils.config_utils import set_data_root

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.vit:
        scale_vit(cfg, *args.vit)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    use_quiet_logger('benchmark_test')
    device = torch.device(
        args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))

    result = dict(config=args.config, checkpoint=args.checkpoint,
                  device=str(device), torch_threads=torch.get_num_threads(),
                  modes={})
    for name, (model_cfg, loader_cfg) in build_modes(cfg, args).items():
        result['modes'][name] = time_mode(model_cfg, loader_cfg,
                                          args.checkpoint, device,
                                          args.num_images, args.warmup)
    if args.reference_dir:
        result['modes']['authors'] = time_authors(cfg, args)
    report(result)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
