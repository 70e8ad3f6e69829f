"""edgezoo: efficient vision backbones for edge and mobile targets.

``import edgezoo`` registers every ``ez_*`` model with timm, so ``timm.create_model("ez_...")``
works. The front door:

* :func:`create_model`, :func:`list_models` - build / find models (unknown names get suggestions);
* :func:`load_checkpoint` - timm, official and edgezoo checkpoints, safely;
* :func:`fuse` - the deploy form (BatchNorm folded, branches collapsed, drop-path removed).
"""

from edgezoo.checkpoint import load_checkpoint, read_state_dict, save_atomic
from edgezoo.errors import CheckpointError, ConfigError, EdgezooError, UnknownModelError
from edgezoo.fuse import fuse
from edgezoo.registry import FAMILIES, ModelSpec, create_model, get_spec, list_models

# Model families: importing them registers their models.
from edgezoo import cnn_attention  # noqa: F401  isort: skip
from edgezoo import shvit, efficientvit_msra  # noqa: F401  isort: skip
from edgezoo import efficientvit_mit  # noqa: F401  isort: skip
from edgezoo import focalnet  # noqa: F401  isort: skip
from edgezoo import mix  # noqa: F401  isort: skip

def _version() -> str:
    """The installed distribution's version: ``pyproject.toml`` is its one source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgezoo")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "ConfigError",
    "EdgezooError",
    "ModelSpec",
    "UnknownModelError",
    "__version__",
    "create_model",
    "fuse",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "read_state_dict",
    "save_atomic",
]
