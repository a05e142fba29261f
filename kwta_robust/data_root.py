"""A ``data_root`` where the data set reads no folder: one refusal for the config key, the API and the flags.

``data_root`` (``--data-root``) names the folder of a data set read from disk (cifar10, svhn, mnist,
fashion-mnist). A data set that ships with the package (mnist5k, digits, the ``*-samples`` sets) reads no folder, so
the key would be ignored and the run evaluate (or train on) that bundled set: a CIFAR-10 user who set it with
``quick.yaml`` got mnist5k numbers. :func:`check_data_root_used` refuses it, naming the key or flag that gave it, the
data set and the fix; ``evaluate``/``compare`` (:mod:`kwta_robust.commands.common`) and ``train`` call it with the
flag before any work, and the library where it reads a config's data set (:func:`kwta_robust.loading.load_eval_data`
for a config file or :func:`kwta_robust.api.evaluate_model`; :func:`kwta_robust.training.run.run_training`) with the
key. A plug-in's data set is left alone (its loader may read the folder)."""

from __future__ import annotations

from kwta_robust import data as data_module
from kwta_robust.errors import ConfigError


def check_data_root_used(dataset: str, data_root: object, where: str = "data_root", of: str = "",
                         dataset_where: str = "dataset: in the config", verb: str = "evaluate") -> None:
    """Refuse ``data_root`` (not ``None``) with ``dataset``, a set of this package read from no folder, in one
    line: ``{where}: not used with dataset {dataset}{of}: ...``. ``where``: the key (``data_root``) or flag
    (``--data-root``) that gave it; ``of``: where the data set was named (`` of c.yaml``); ``dataset_where``: how the
    fix names the data set's key or flag (``train``'s ``--dataset``); ``verb``: what the run does with the data
    (``train on``). Unknown names are left to the data loading."""
    if data_root is None or not isinstance(dataset, str) or dataset not in data_module.available_datasets():
        return
    info = data_module.dataset_info(dataset)
    if info.location is not None or getattr(info.loader, "__module__", None) != data_module.__name__:
        return
    on_disk = ", ".join(name for name in data_module.available_datasets()
                        if data_module.dataset_info(name).location is not None)
    flag = where.startswith("--")
    own = "with --data FILE" if flag else "as dataset: {file: PATH} (--data FILE)"
    raise ConfigError(f"{where}: not used with dataset {dataset}{of}: that set ships with the package and is read "
                      f"from no folder, so the run would {verb} {dataset}, not the data there; to {verb} a data set "
                      f"on disk set {dataset_where} to one of {on_disk}, or give your own images {own}; else "
                      f"{'drop' if flag else 'remove'} {where}")
