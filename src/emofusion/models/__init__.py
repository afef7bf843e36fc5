"""Models: every paper's model in its own module, all created by name from one registry."""

# imported for their side effect: each module registers its models
from emofusion.models import (  # noqa: F401
    baselines,
    classical,
    delta_attention,
    early_fusion,
    late_fusion,
    lf_dnn,
    lmf,
    marn,
    mfn,
    mman,
    mult,
    rmfn,
    rrnn,
    tfn,
)
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.registry import MODELS, create_model, list_models, register_model

__all__ = ["FusionModel", "ModelOutput", "MODELS", "create_model", "list_models", "register_model"]
