"""Multi-stage training protocols built from ordinary engine runs (:func:`emofusion.training.run.train_run`).

A model that its paper trains in stages declares the stages' settings (e.g. paper 002's ``TABLE1`` in
``models/delta_attention.py``, paper 004's sub-networks in ``models/mman.py``); the protocols that run them
live here, so nothing under ``models/`` imports the training engine.

- :func:`train_staged`: paper 002 Table 1, delta self-attention -> DCCA -> cross attention, each stage
  trained on the previous stage's saved outputs;
- :func:`train_mman`: paper 004, sub-networks trained alone, then the fusion layer on the frozen
  sub-networks, then optional joint fine-tuning.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from emofusion.data import load_dataset
from emofusion.data.batch import Sample
from emofusion.models.delta_attention import TABLE1, _merge_by_id, _stage_outputs, save_stage_outputs
from emofusion.models.mman import subnetwork_specs
from emofusion.training.config import RunConfig
from emofusion.training.run import default_run_dir, train_run


def train_staged(
    dataset: str = "synthetic",
    dataset_options: dict | None = None,
    modalities: list[str] | None = None,
    model_options: dict | None = None,
    stages: dict | None = None,
    seed: int = 0,
    output: str | Path = "runs/delta_attention_staged",
    threads: int | None = 1,
    patience: int = 5,
    loss: str | None = None,
) -> dict:
    """Paper 002's staged training (Table 1), built on :func:`emofusion.training.train_run`.

    1. ``selfattn_<m>``: each unimodal delta self-attention module with its own head, on the task loss.
    2. ``dcca``: the DCCA encoders on the saved ``Y_M`` with the correlation loss only (eq. 13); a linear
       probe on the detached pooled ``Yhat`` is fitted alongside (it gives Table 2's DCCA row).
    3. ``crossattn``: the fused attention + head (eq. 14-17) on the saved ``[Yhat_M; Y_M]``.

    ``stages`` overrides Table 1 per stage (e.g. ``{"dcca": {"lr": 1e-3}}``). Returns the metrics of every
    stage and the paths of the saved outputs; the stage-3 metrics are those of the whole staged model.
    """
    output = Path(output)
    opts = {k: v for k, v in (model_options or {}).items() if k not in ("variant", "modality", "input_stage")}
    hp = {k: dict(v) for k, v in TABLE1.items()}
    for k, v in (stages or {}).items():
        hp.setdefault(k, {}).update(v)
    common = dict(
        seed=seed,
        threads=threads,
        patience=patience,
        progress=False,
        plots=False,
        loss=loss,
    )
    results: dict = {"stages": {}, "outputs": {}}

    # stage 1: unimodal modules, one engine run per modality
    if modalities is None:
        modalities = list(load_dataset(dataset, **(dataset_options or {})).modality_dims)
    per_mod: dict[str, dict[str, list[Sample]]] = {}
    task = None
    for m in modalities:
        key = f"selfattn_{m}" if f"selfattn_{m}" in hp else "selfattn_text"
        cfg = RunConfig(
            model="delta_attention",
            dataset=dataset,
            modalities=[m],
            dataset_options=dataset_options or {},
            model_options={**opts, "variant": "unimodal"},
            output=str(output / f"stage1_{m}"),
            **common,
            **hp[key],
        )
        res = train_run(cfg)
        results["stages"][f"selfattn_{m}"] = res.metrics
        task = res.bundle.task
        model = res.module.model.eval()
        per_mod[m] = {
            split: _stage_outputs(
                lambda x, model=model: model.encode_unimodal(x)[0], res.bundle.split(split), [m]
            )
            for split in ("train", "val", "test")
        }
    d_o = opts.get("d_o", 128)
    d_r = opts.get("d_r", 16)
    splits = {
        split: _merge_by_id([per_mod[m][split] for m in modalities]) for split in ("train", "val", "test")
    }
    file1 = save_stage_outputs(output / "stage1_outputs.pt", task, {m: d_o for m in modalities}, splits)
    results["outputs"]["stage1"] = str(file1)

    # stage 2: DCCA on the saved representations (correlation objective only)
    cfg = RunConfig(
        model="delta_attention",
        dataset=f"paper002-saved:{file1}",
        modalities=modalities,
        model_options={**opts, "variant": "dcca", "input_stage": "representation", "dcca_task_grad": False},
        output=str(output / "stage2_dcca"),
        standardize=False,
        drop_constant=False,
        **common,
        **hp["dcca"],
    )
    res = train_run(cfg)
    results["stages"]["dcca"] = res.metrics
    model = res.module.model.eval()

    def correlated(inputs, model=model):
        masks = {m: inputs[m].mask for m in modalities}
        ys = {m: inputs[m].values for m in modalities}
        yhats = model.encode_dcca(ys, masks)
        return {m: torch.cat([yhats[m], ys[m]], dim=-1) for m in modalities}

    splits2 = {split: _stage_outputs(correlated, res.bundle.split(split), modalities) for split in splits}
    file2 = save_stage_outputs(
        output / "stage2_outputs.pt", task, {m: d_r + d_o for m in modalities}, splits2
    )
    results["outputs"]["stage2"] = str(file2)

    # stage 3: fused attention + softmax / regression head on the saved correlated features
    cfg = RunConfig(
        model="delta_attention",
        dataset=f"paper002-saved:{file2}",
        modalities=modalities,
        model_options={**opts, "variant": "full", "input_stage": "correlated"},
        output=str(output / "stage3_crossattn"),
        standardize=False,
        drop_constant=False,
        **common,
        **hp["crossattn"],
    )
    res = train_run(cfg)
    results["stages"]["crossattn"] = res.metrics
    results["metrics"] = res.metrics
    (output / "staged_metrics.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def train_mman(
    config,
    finetune_epochs: int = 0,
    finetune_lr_scale: float = 0.1,
    fusion_lr: float | None = None,
    fusion_epochs: int | None = None,
) -> dict:
    """Paper 004's protocol through the training engine, for ``config.model`` in (``mman``, ``clstm_lf``):

    1. every sub-network (cLSTM-MMA and/or the unimodal cLSTMs) is trained on its own (``train_run``, same
       data, seed and schedule as ``config``) into ``OUT/sub_<name>``;
    2. the fusion layer is trained with the sub-networks loaded and frozen (``stage="fusion"``) into
       ``OUT/fusion`` (at ``fusion_lr`` / ``fusion_epochs`` when given: a small layer on fixed inputs
       usually wants a larger learning rate than the sub-networks);
    3. optionally (``finetune_epochs > 0``) everything is fine-tuned jointly at ``lr * finetune_lr_scale``
       into ``OUT/finetune``.

    Returns ``{"subnets": {name: RunResult}, "fusion": RunResult, "finetune": RunResult | None}``.
    """
    if config.model not in ("mman", "clstm_lf"):
        raise ValueError(f"train_mman trains 'mman' or 'clstm_lf', got {config.model!r}")
    base = Path(config.output) if config.output else default_run_dir(config)
    modalities = config.modalities or load_dataset(config.dataset, **config.dataset_options).modalities
    options = {k: v for k, v in config.model_options.items() if k not in ("stage", "pretrained")}
    subnets, paths = {}, {}
    for name, (model_name, sub_options) in subnetwork_specs(config.model, modalities, options).items():
        sub = replace(config, model=model_name, model_options=sub_options, output=str(base / f"sub_{name}"))
        subnets[name] = train_run(sub)
        paths[name] = str(subnets[name].run_dir)
    fusion_cfg = replace(
        config,
        model_options={**options, "stage": "fusion", "pretrained": paths},
        lr=fusion_lr or config.lr,
        max_epochs=fusion_epochs or config.max_epochs,
        output=str(base / "fusion"),
    )
    fusion = train_run(fusion_cfg)
    finetune = None
    if finetune_epochs > 0:
        ft_cfg = replace(
            config,
            model_options={**options, "stage": "joint", "pretrained": {"self": str(fusion.run_dir)}},
            max_epochs=finetune_epochs,
            lr=config.lr * finetune_lr_scale,
            output=str(base / "finetune"),
        )
        finetune = train_run(ft_cfg)
    return {"subnets": subnets, "fusion": fusion, "finetune": finetune}
