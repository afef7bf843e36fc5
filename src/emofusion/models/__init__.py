"""Models: every paper's model in its own module, all created by name from one registry."""

from emofusion.models import baselines  # noqa: F401  (registers its models)
from emofusion.models import rmfn  # noqa: F401
from emofusion.models import late_fusion, rrnn  # noqa: F401
from emofusion.models import mman  # noqa: F401
from emofusion.models import early_fusion  # noqa: F401
from emofusion.models import delta_attention, mult  # noqa: F401
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.registry import MODELS, create_model, list_models, register_model

__all__ = ["FusionModel", "ModelOutput", "MODELS", "create_model", "list_models", "register_model"]
