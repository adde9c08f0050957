"""Config helpers shared by the tools."""
from mmengine.config import Config


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every data loader's data set (and wrapped ones) at a folder.

    ``--cfg-options data_root=...`` cannot do this: the configs substitute
    ``data_root`` into the data set dicts when they are parsed.

    Args:
        cfg (Config): Config, changed in place.
        data_root (str): New data root.
    """

    def visit(dataset_cfg) -> None:
        if 'data_root' in dataset_cfg:
            dataset_cfg['data_root'] = data_root
        for key in ('dataset', 'datasets'):
            inner = dataset_cfg.get(key)
            for item in inner if isinstance(inner, list) else [inner]:
                if item is not None:
                    visit(item)

    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(loader) is not None:
            visit(cfg[loader]['dataset'])
