"""Feature extraction from media files, offline: ``emofusion extract`` (see docs/extract.md).

Modules, one per extractor: :mod:`media` (decoding), :mod:`acoustic` (100 Hz prosody + MFCC, and openSMILE
eGeMAPS as a non-commercial option), :mod:`words` (pocketsphinx alignment / recognition), :mod:`text`
(GloVe per word), :mod:`face` (OpenCV Haar geometry per frame), :mod:`pipeline` (files -> .csd + datasets).
Importing this package loads none of the extractor packages.
"""

from __future__ import annotations

__all__ = ["extract", "extract_file", "ExtractSettings"]


def __getattr__(name: str):
    if name in __all__:
        from emofusion.features import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'emofusion.features' has no attribute {name!r}")
