"""Optional dependencies, imported lazily with a message that names the pa3d extra installing them.

The core of pa3d (``pa3d_layers``, ``pa3d_losses``, ``pa3d_models``) needs torch, einops, numpy and
safetensors only. Every role's own dependencies are an extra named by role in ``pyproject.toml``
(``pip install 'pa3d[data]'``, ``'pa3d[text]'``, ...) and are imported where they are used through
[require][pa3d_models.deps.require], so a missing one fails at the feature that needs it, with the command
that fixes it, instead of at ``import pa3d_models``.

``pa3d_layers`` may import no other pa3d package and keeps its own detection of the compiled extensions
(``pa3d_layers._backend``: torch-cluster and torch-scatter, the ``accel`` extra, with pure-PyTorch fallbacks).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["OPTIONAL_DEPENDENCIES", "MissingDependencyError", "require"]

#: Top-level module -> (distribution to install, the pa3d extra that installs it). ``tests/test_packaging.py``
#: checks each distribution is listed in (or pulled in by) its extra in ``pyproject.toml``.
OPTIONAL_DEPENDENCIES: dict[str, tuple[str, str]] = {
    "open_clip": ("open_clip_torch", "text"),
    "sentence_transformers": ("sentence-transformers", "offline-text"),
    "timm": ("timm", "teacher"),
    "huggingface_hub": ("huggingface_hub", "hub"),
    "trimesh": ("trimesh", "data"),
    "tqdm": ("tqdm", "data"),
    "torch_geometric": ("torch-geometric", "data"),
    "yaml": ("pyyaml", "train"),
    "matplotlib": ("matplotlib", "train"),
    "gradio": ("gradio", "app"),
}


class MissingDependencyError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the ``pa3d[extra]`` that installs it.

    A subclass of ``ModuleNotFoundError`` (hence of ``ImportError``), so code that already handles a missing
    module keeps working.
    """


def require(module: str, feature: str, *, extra: str | None = None) -> ModuleType:
    """Import an optional dependency, or raise a message naming the extra that installs it.

    Args:
        module: the module to import (``"trimesh"``, ``"open_clip.model"``, ``"matplotlib.pyplot"``).
        feature: what needs it, for the message (``"reading .ply meshes"``, ``"OpenCLIPTextEncoder"``).
        extra: the pa3d extra that installs it; by default the one listed for the top-level module in
            ``OPTIONAL_DEPENDENCIES`` (this module).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: when the module (or one of its own dependencies) cannot be imported; the
            message names the module, the feature and ``pip install 'pa3d[EXTRA]'``.
        ValueError: for a module with no known extra and none given.

    Examples:
        >>> try:
        ...     require("no_such_module_pa3d", "this example", extra="data")
        ... except ImportError as err:
        ...     print(err)  # doctest: +ELLIPSIS
        this example needs 'no_such_module_pa3d', which cannot be imported (...): pip install 'pa3d[data]'
    """
    top = module.partition(".")[0]
    if extra is None:
        if top not in OPTIONAL_DEPENDENCIES:
            raise ValueError(
                f"module {module!r} has no known pa3d extra: pass extra=, or add it to OPTIONAL_DEPENDENCIES "
                f"(known: {sorted(OPTIONAL_DEPENDENCIES)})"
            )
        extra = OPTIONAL_DEPENDENCIES[top][1]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        dist = OPTIONAL_DEPENDENCIES.get(top, (top, extra))[0]
        raise MissingDependencyError(
            f"{feature} needs {dist!r}, which cannot be imported ({err}): "
            f"pip install 'pa3d[{extra}]'",
            name=module,
        ) from err
