"""emofusion: multimodal emotion and sentiment recognition on unaligned, multi-rate feature sequences.

The registries are reachable from the top level, as timm's are::

    import emofusion
    emofusion.list_models()
    model = emofusion.create_model("rrnn", {"text": 300, "audio": 74}, task)
    bundle = emofusion.load_dataset("synthetic", n_train=200)

They are imported lazily so that ``import emofusion`` (and the CLI's start-up) does not load torch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emofusion")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_LAZY = {
    "create_model": "emofusion.models",
    "list_models": "emofusion.models",
    "register_model": "emofusion.models",
    "load_dataset": "emofusion.data",
    "list_datasets": "emofusion.data",
    "register_dataset": "emofusion.data",
    "from_pretrained": "emofusion.pretrained",
    "save_pretrained": "emofusion.pretrained",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emofusion' has no attribute {name!r}")
