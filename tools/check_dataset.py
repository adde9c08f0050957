"""Check the data a config reads, before training: one report of every bad
file, with its path and the reason.

Fast mode (the default; also what ``WSSSVOCDataset`` / ``WSSSCOCODataset``
run when they are built): the split list (empty, duplicate ids, blank
lines), every listed image and mask exists and is not empty, the image-label
file parses and covers every image. ``--full`` also decodes every image and
mask as the pipeline does: undecodable files, images smaller than
``--min-size`` px, image/mask size mismatches, multi-channel masks, class
ids outside the config's class count, training images without a foreground
class. It shows a progress bar; decoding is threaded (``--workers``).

Examples::

    python tools/check_dataset.py configs/fsr/<config>.py
    python tools/check_dataset.py configs/fsr/<config>.py --split train --full
    python tools/check_dataset.py <config> --data-root /data/VOC2012 --full \
        --out work_dirs/data_report.txt

Exit status: 0 when no problem was found, 1 otherwise.
"""
import argparse
import copy
import os.path as osp
import sys
import time
import warnings

SPLITS = ('train', 'val', 'test')


def _import_plugin():
    try:
        import mmseg_fsr  # noqa: F401
    except ImportError:
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
        import mmseg_fsr  # noqa: F401


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Check the data set files a config reads; report every '
        'bad file at once.')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--split',
        choices=SPLITS + ('all', ),
        default='all',
        help='which data loader\'s data set to check (default: all of them)')
    parser.add_argument(
        '--full',
        action='store_true',
        help='also decode every image and mask (sizes, class ids, ...)')
    parser.add_argument(
        '--min-size',
        type=int,
        default=None,
        help='smallest accepted image side in px with --full (default: '
        'mmseg_fsr.datasets.checks.MIN_IMAGE_SIDE = 16)')
    parser.add_argument(
        '--workers', type=int, default=4, help='decoding threads (--full)')
    parser.add_argument(
        '--out', help='also write the report to this text file')
    parser.add_argument(
        '--data-root',
        help='check another data folder of the same layout (as '
        'tools/train.py --data-root)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as in tools/train.py')
    return parser.parse_args(argv)


def _dataset_cfgs(dataset_cfg, label):
    """Leaf data set configs, through mmengine's dataset wrappers."""
    if 'datasets' in dataset_cfg:  # ConcatDataset
        for k, inner in enumerate(dataset_cfg['datasets']):
            yield from _dataset_cfgs(inner, f'{label}[{k}]')
    elif 'dataset' in dataset_cfg:  # RepeatDataset, ClassBalancedDataset
        yield from _dataset_cfgs(dataset_cfg['dataset'], label)
    else:
        yield label, dataset_cfg


def _needs_foreground(dataset_cfg, dataset) -> bool:
    """Whether the pipeline stops on images without a foreground class."""
    if getattr(dataset, 'filter_empty_labels', False):
        return False
    for step in dataset_cfg.get('pipeline', []):
        name = str(step.get('type', '')).split('.')[-1]
        if name == 'GenerateImageLabels' and not step.get(
                'allow_empty', False):
            return True
    return False


def check_dataset_cfg(dataset_cfg, full=False, min_side=None, workers=4,
                      progress=True):
    """Check one data set config.

    Returns:
        tuple[str, int, list[DataIssue], list[str]]: A title, the number of
        entries, the problems and the warnings.
    """
    from mmseg.registry import DATASETS

    from mmseg_fsr.datasets.checks import (MIN_IMAGE_SIDE, DataIssue,
                                           SampleSpec, check_files_exist,
                                           check_samples, read_split_file,
                                           warn_blank_lines)
    from mmseg_fsr.datasets.voc_wsss import WSSSDatasetMixin

    cfg = copy.deepcopy(dataset_cfg)
    cfg['lazy_init'] = True
    title = f'{cfg.get("type")} (data_root {cfg.get("data_root")})'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            dataset = DATASETS.build(cfg)
        except (OSError, ValueError, AssertionError, KeyError) as err:
            return title, 0, [
                DataIssue(str(cfg.get('data_root', '')),
                          f'{type(err).__name__}: {err}')
            ], []
        source = dataset.ann_file or dataset.data_prefix.get('img_path')
        title = f'{type(dataset).__name__} ({source})'
        if isinstance(dataset, WSSSDatasetMixin):
            data_list, issues = dataset.load_data_list_with_issues(
                check_files=True)
        else:  # any other mmseg data set
            issues = []
            if dataset.ann_file and osp.isfile(dataset.ann_file):
                split = read_split_file(dataset.ann_file,
                                        dataset.backend_args)
                issues.extend(split.issues)
                warn_blank_lines(dataset.ann_file, split.blank_lines)
            try:
                data_list = dataset.load_data_list()
            except Exception as err:
                return title, 0, issues + [
                    DataIssue(dataset.ann_file or '',
                              f'{type(err).__name__}: {err}')
                ], [str(w.message) for w in caught]
            img_dir = dataset.data_prefix.get('img_path', '')
            blank = osp.join(img_dir, dataset.img_suffix)
            data_list = [d for d in data_list if d['img_path'] != blank]
            issues.extend(check_files_exist(data_list, dataset.backend_args))
        if full:
            bad = {issue.path for issue in issues}
            unique, seen = [], set()
            for info in data_list:
                if info['img_path'] in seen or info['img_path'] in bad or \
                        info.get('seg_map_path') in bad:
                    continue
                seen.add(info['img_path'])
                unique.append(info)
            spec = SampleSpec(
                num_classes=len(dataset.metainfo['classes']),
                ignore_index=dataset.ignore_index,
                reduce_zero_label=dataset.reduce_zero_label,
                label_map=dataset.label_map,
                min_side=MIN_IMAGE_SIDE if min_side is None else min_side,
                require_foreground=_needs_foreground(cfg, dataset))
            print(f'decoding {len(unique)} samples of {title}')
            issues.extend(
                check_samples(unique, spec, dataset.backend_args, workers,
                              progress))
    return title, len(data_list), issues, [str(w.message) for w in caught]


def main(argv=None) -> int:
    args = parse_args(argv)
    _import_plugin()
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmseg_fsr.datasets.checks import format_issues

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.data_root is not None:
        from mmseg_fsr.utils.config_utils import set_data_root
        set_data_root(cfg, args.data_root)
    init_default_scope(cfg.get('default_scope', 'mmseg'))

    splits = SPLITS if args.split == 'all' else (args.split, )
    todo, seen = [], set()
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or 'dataset' not in loader:
            if args.split != 'all':
                print(f'error: the config has no {split}_dataloader',
                      file=sys.stderr)
                return 2
            continue
        for label, dataset_cfg in _dataset_cfgs(loader['dataset'], split):
            key = repr(dataset_cfg.to_dict() if hasattr(dataset_cfg, 'to_dict')
                       else dataset_cfg)
            if key not in seen:  # test_dataloader is often val_dataloader
                seen.add(key)
                todo.append((label, dataset_cfg))

    report, total = [], 0
    start = time.time()
    for label, dataset_cfg in todo:
        title, count, issues, warns = check_dataset_cfg(
            dataset_cfg, args.full, args.min_size, args.workers)
        total += len(issues)
        status = 'OK' if not issues else f'{len(issues)} problem(s)'
        report.append(f'[{label}] {title}: {count} entries, {status}')
        report.extend(f'  warning: {w}' for w in warns)
        if issues:
            report.append(format_issues(issues, limit=None))
    mode = 'full' if args.full else 'fast'
    report.append(f'{mode} check of {len(todo)} data set(s) in '
                  f'{time.time() - start:.1f} s: '
                  + ('no problem found' if not total else
                     f'{total} problem(s)'))
    text = '\n'.join(report)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return 1 if total else 0


if __name__ == '__main__':
    sys.exit(main())
