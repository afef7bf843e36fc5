"""Models: every paper's model in its own module, all created by name from one registry."""

from emofusion.models import (  # noqa: F401  # noqa: F401
    baselines,  # noqa: F401  (registers its models)
    delta_attention,
    early_fusion,  # noqa: F401
    late_fusion,
    mman,  # noqa: F401
    mult,
    rmfn,  # noqa: F401
    rrnn,
)
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.registry import MODELS, create_model, list_models, register_model

__all__ = ["FusionModel", "ModelOutput", "MODELS", "create_model", "list_models", "register_model"]
