"""``wordslots:INNER``: put word-aligned features whose empty slots were dropped back on one word axis.

The MFN reader drops all-zero word slots per modality (an extractor found nothing), so audio and video of
one segment end up with different lengths although they were aligned to the same 20 words; models that fuse
per step (paper 003's input-level fusion) would then pair the wrong words. This wrapper rebuilds, per
sample, the union of the kept slots (read from ``intervals[m]``, in word-slot units) and places every
modality's rows at their slots. A slot one modality lacks is filled with NaN: hygiene ignores NaN when
fitting and turns it into 0 (the training mean, i.e. "no evidence") after standardising. Slots that no
modality has stay dropped, so a sample with every modality absent has length 0 (models treat it as empty).

Example: ``load_dataset("wordslots:mfn:../shared/data/mfn_h5/mmmo", modalities="audio,visual")``; options go
to the inner loader. Pass ``modalities`` so the union is taken over the modalities actually used.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle, SampleDataset
from emofusion.data.registry import load_dataset, register_dataset


def restore_slots(sample: Sample, modalities) -> Sample:
    slots = {}
    for m in modalities:
        iv = sample.intervals.get(m)
        if iv is None or len(iv) != sample.features[m].shape[0]:
            raise ValueError(
                f"wordslots: sample {sample.id!r} modality {m!r} has no word-slot intervals matching its "
                f"{sample.features[m].shape[0]} rows; this wrapper needs a word-aligned reader (e.g. mfn:)"
            )
        slots[m] = np.asarray(iv[:, 0]).astype(np.int64)
    union = np.unique(np.concatenate([slots[m] for m in modalities])) if modalities else np.zeros(0, np.int64)
    features = dict(sample.features)
    intervals = dict(sample.intervals)
    for m in modalities:
        x = sample.features[m]
        out = np.full((len(union), x.shape[1]), np.nan, dtype=np.float32)
        out[np.searchsorted(union, slots[m])] = x
        features[m] = out
        intervals[m] = np.stack([union, union + 1], axis=1).astype(np.float64)
    return replace(sample, features=features, intervals=intervals)


@register_dataset("wordslots", "word-aligned view of a reader that drops empty slots: 'wordslots:mfn:FOLDER'")
def load_wordslots(inner: str, **options) -> DatasetBundle:
    bundle = load_dataset(inner, **options)
    mods = bundle.modalities

    def convert(ds: SampleDataset) -> SampleDataset:
        return SampleDataset([restore_slots(s, mods) for s in ds], name=ds.name)

    return replace(
        bundle,
        name=f"wordslots:{bundle.name}",
        train=convert(bundle.train),
        val=convert(bundle.val),
        test=convert(bundle.test),
        info={**bundle.info, "alignment": "word slots restored (union of non-empty slots; missing rows NaN)"},
    )
