"""Datasets by name, so recipes and the Stage-1 precompute command can pick one from the command line."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .find3d import Find3DDataset
from .lpsb import LPSBDataset
from .others import FaustNpzDataset, ObjaverseGeneralDataset, ScanObjectNNPartDataset
from .partnet import PartNetDataset, PartNetEDataset
from .shapenetpart import ShapeNetPartDataset
from .synthetic import SyntheticPartDataset

__all__ = ["DATASETS", "DATA_SUBDIRS", "build_dataset", "default_data_root"]

DATASETS: dict[str, Callable[..., Any]] = {
    "synthetic": SyntheticPartDataset,
    "shapenetpart": ShapeNetPartDataset,
    "lpsb": LPSBDataset,
    "partnet": PartNetDataset,
    "partnete": PartNetEDataset,
    "scanobjectnn_part": ScanObjectNNPartDataset,
    "objaverse_general": ObjaverseGeneralDataset,
    "find3d": Find3DDataset,
    "faust": FaustNpzDataset,
}
"""Dataset name -> class. `build_dataset` constructs one."""

DATA_SUBDIRS: dict[str, tuple[str, ...]] = {
    "shapenetpart": ("shapenetcore_partanno_segmentation_benchmark_v0_normal", "shapenetpart", "shapenetpart_cap"),
    "lpsb": ("lpsb", "LabeledDB_new"),
    "partnet": ("partnet", "partnet_mobility"),
    "partnete": ("partnete", "PartNetE", "partnet_e"),
    "scanobjectnn_part": ("scanobjectnn_part", "ScanObjectNN"),
    "objaverse_general": ("objaverse_general", "objaverse"),
    "find3d": ("find3d", "patchalign3d-training-data"),
    "faust": ("faust", "FAUST"),
}
"""Folder names looked up under `default_data_root()` when `build_dataset` gets no root."""


def default_data_root() -> Path | None:
    """`$PA3D_DATA` when set, else `../shared/data` beside the repository checkout when it exists, else None."""
    env = os.environ.get("PA3D_DATA")
    if env:
        return Path(env).expanduser()
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return shared if shared.is_dir() else None


def build_dataset(name: str, root: str | Path | None = None, **kwargs: Any) -> Any:
    """Construct a registered dataset.

    Args:
        name: a key of `DATASETS`.
        root: the dataset's folder (FAUST: its `.npz` folder or pattern; synthetic: the cache folder). When
            None, the first of `DATA_SUBDIRS[name]` found under `default_data_root()` is used.
        **kwargs: passed to the dataset's constructor.

    Raises:
        ValueError: an unknown name (the message lists the valid ones), or no root given and none found.

    Examples:
        >>> ds = build_dataset("synthetic", num_shapes=2, num_points=64, cache=False)
        >>> len(ds), ds[1].category
        (2, 'table')
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    cls = DATASETS[name]
    if name == "synthetic":
        if root is not None:
            kwargs.setdefault("cache_dir", root)
        return cls(**kwargs)
    if root is None:
        base = default_data_root()
        found = [base / d for d in DATA_SUBDIRS.get(name, ()) if base is not None and (base / d).exists()]
        if not found:
            raise ValueError(
                f"root: no folder given for dataset {name!r} and none of {DATA_SUBDIRS.get(name)} exists under "
                f"the data root {base} (set PA3D_DATA or pass root=)"
            )
        root = found[0]
    return cls(root, **kwargs)
