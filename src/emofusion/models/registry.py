"""Models by name: ``create_model``, ``list_models`` (timm-style)."""

from __future__ import annotations

from emofusion.registry import Registry
from emofusion.tasks import TaskSpec

MODELS = Registry("model")
register_model = MODELS.register


def list_models() -> list[str]:
    return MODELS.names()


def create_model(name: str, modality_dims: dict[str, int], task: TaskSpec, **kwargs):
    """Build the registered model ``name`` for these modalities and task; ``kwargs`` are its options.

    Options every model takes: ``absent`` ("token" default / "zeros", see ``FusionModel.set_absent_mode``) and
    ``head`` ("plain" default / "zero_inflated", see ``models.base.ZeroInflated``, intensities only)."""
    from emofusion.models.base import build_with_shared_options

    factory = MODELS.get(name)
    try:
        return build_with_shared_options(factory, modality_dims, task, **kwargs)
    except TypeError as err:
        raise TypeError(f"model {name!r}: {err}") from err
