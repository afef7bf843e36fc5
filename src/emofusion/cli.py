"""The ``emofusion`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

# Commands contributed by other modules: each module defines ``register_cli(subparsers)``, which adds its
# sub-parser and sets ``func`` (a callable taking the parsed args and returning an exit code).
EXTRA_COMMANDS: list[str] = ["emofusion.data.commands", "emofusion.evaluation.attention_plots",
                            "emofusion.evaluation.benchmark", "emofusion.evaluation.grid", "emofusion.evaluation.tune",
                            "emofusion.features.commands"]  # extract, predict, export


def _add_train(sub):
    p = sub.add_parser(
        "train",
        help="train a model on a dataset",
        description="Train a registered model on a registered dataset. Writes OUTPUT/ with config.yaml, "
        "checkpoints/ (best.ckpt, last.ckpt), metrics.csv (per-epoch log), metrics.json "
        '({"val": {...}, "test": {...}}) and plots/.',
        epilog="Overrides: key=value for any config field (lr=3e-4 batch_size=64 patience=10 loss=mse "
        "devices=2 strategy=ddp precision=bf16-mixed), model.OPTION=value for model options "
        "(model.hidden_dim=128), data.OPTION=value for dataset options (data.n_train=400 data.noise.visual=2). "
        "Values are parsed as YAML.",
    )
    p.add_argument("--model", help="registered model name (see `emofusion models`)")
    p.add_argument("--dataset", help="dataset name (see `emofusion datasets`), e.g. synthetic, mfn:PATH")
    p.add_argument("--modalities", help="comma-separated subset, e.g. text,audio (default: all of the dataset)")
    p.add_argument("--max-epochs", type=int, help="maximum number of epochs (early stopping may end sooner)")
    p.add_argument("--seed", type=int, help="random seed (data order, initialisation, synthetic data)")
    p.add_argument("--output", help="run directory (default runs/MODEL-DATASET-seedS)")
    p.add_argument(
        "--config",
        help="YAML file, or the name of a shipped preset (e.g. rrnn_mosei; see configs/); command-line "
        "values override it",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from RUN_DIR/checkpoints/last.ckpt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.set_defaults(func=cmd_train)


def build_config(args):
    from emofusion.training.config import RunConfig, apply_overrides, load_yaml
    from emofusion.training.config_checks import resolve_config

    data = load_yaml(resolve_config(args.config)) if args.config else {}
    flags = {
        "model": args.model,
        "dataset": args.dataset,
        "max_epochs": args.max_epochs,
        "seed": args.seed,
        "output": args.output,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.modalities:
        data["modalities"] = [m.strip() for m in args.modalities.split(",") if m.strip()]
    if args.quiet:
        data["progress"] = False
    data = apply_overrides(data, args.overrides)
    return RunConfig.from_dict(data)


def cmd_train(args) -> int:
    from rich.console import Console

    from emofusion.evaluation.reports import print_metrics
    from emofusion.training.config import apply_overrides
    from emofusion.training.run import config_from_run_dir, train_run

    console = Console()
    if args.resume:
        config = config_from_run_dir(args.resume)
        if args.overrides:
            from emofusion.training.config import RunConfig

            config = RunConfig.from_dict(apply_overrides(config.to_dict(), args.overrides))
        config.output = args.resume
        result = train_run(config, resume=True)
    else:
        config = build_config(args)
        result = train_run(config)
    if not result.metrics:  # non-zero ranks of a distributed run
        return 0
    if config.plots:
        from emofusion.evaluation.plots import plot_run

        plot_run(result.run_dir, result.module, result.bundle, config)
    print_metrics(
        result.metrics,
        result.module.task.kind,
        title=f"{config.model} on {config.dataset} (seed {config.seed}, {result.seconds:.0f} s)",
        console=console,
        baselines=result.baselines,
        info=result.info,
    )
    console.print(f"run directory: {result.run_dir}  (metrics.json, checkpoints/, plots/)")
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset split")
    p.add_argument("checkpoint", help="a .ckpt file or a run directory")
    p.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", help="train, val or test (default test)")
    p.add_argument("--output", help="write the metrics as JSON here")
    p.add_argument("overrides", nargs="*", help="data.OPTION=value dataset options")
    p.set_defaults(func=cmd_evaluate)


def _dataset_options(overrides):
    from emofusion.training.config import apply_overrides

    return apply_overrides({}, overrides)["dataset_options"]


def cmd_evaluate(args) -> int:
    from emofusion.evaluation.baselines import bundle_baselines
    from emofusion.evaluation.reports import print_metrics
    from emofusion.training.run import bundle_for_module, evaluate_split, load_module

    module = load_module(args.checkpoint)
    bundle, run = bundle_for_module(module, args.dataset, _dataset_options(args.overrides))
    from emofusion.inference import check_same_task

    check_same_task(module.task, bundle.task, args.checkpoint, bundle.name)
    metrics = evaluate_split(module, bundle, args.split, config=run)
    baselines = bundle_baselines(bundle, (args.split,), seed=run.seed)
    info = {"monitor": module.task.monitor, "monitor_mode": module.task.monitor_mode}
    print_metrics({args.split: metrics}, module.task.kind, title=f"{args.checkpoint} on {bundle.name}/{args.split}",
                  baselines=baselines, info=info)
    if args.output:
        Path(args.output).write_text(json.dumps({args.split: metrics, "baselines": baselines}, indent=2))
    return 0


def _add_ensemble(sub):
    p = sub.add_parser("ensemble", help="combine trained runs of one dataset, weights chosen on the validation split")
    p.add_argument("runs", nargs="+", help="run directories (or .ckpt files) trained on the same dataset")
    p.add_argument("--rule", default="greedy", choices=["greedy", "uniform", "best"],
                   help="greedy: Caruana et al. 2004 forward selection with replacement (default); uniform: the mean "
                        "of all; best: the single best member")
    p.add_argument("--rounds", type=int, default=20, help="greedy selection rounds (default 20)")
    p.add_argument("--output", help="write weights and metrics as JSON here")
    p.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args) -> int:
    from emofusion.evaluation.baselines import bundle_baselines
    from emofusion.evaluation.ensemble import ensemble, member_predictions
    from emofusion.evaluation.reports import print_metrics

    members = [member_predictions(run) for run in args.runs]
    result = ensemble(members, args.rule, args.rounds)
    bundle = members[0].bundle
    baselines = bundle_baselines(bundle, ("val", "test"), seed=members[0].seed)
    task = members[0].task
    weights = ", ".join(f"{name} {w:.3f}" for name, w in result["weights"].items())
    print_metrics(result["metrics"], task.kind, title=f"ensemble ({args.rule}) on {bundle.name}: {weights}",
                  baselines=baselines, info={"monitor": task.monitor, "monitor_mode": task.monitor_mode})
    if args.output:
        Path(args.output).write_text(json.dumps({**result, "baselines": baselines}, indent=2, default=float))
    return 0


def _add_models(sub):
    p = sub.add_parser("models", help="list registered models, or one model's options (emofusion models NAME)")
    p.add_argument("name", nargs="?", help="print this model's options with their defaults and help")
    p.add_argument("--params", action="store_true", help="also print parameter counts (MOSEI-sized inputs)")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from emofusion.models import MODELS, create_model

    if args.name:
        from emofusion.options import format_options

        factory = MODELS.get(args.name)  # unknown names: the registry's "did you mean"
        print(f"{args.name}: {MODELS.description(args.name)}")
        print("options (model.NAME=VALUE):")
        print("\n".join(format_options(factory)) or "  (none)")
        return 0
    for name in MODELS.names():
        if not args.params:
            print(name)
            continue
        from emofusion.tasks import emotion_intensity_task

        dims = {"text": 300, "audio": 74, "visual": 35}
        task = emotion_intensity_task()
        try:
            model = create_model(name, dims, task)
            count = f"{model.num_parameters():,}"
        except Exception as err:  # e.g. a unimodal model needs one modality
            try:
                model = create_model(name, {"audio": 74}, task)
                count = f"{model.num_parameters():,} (audio only)"
            except Exception:
                count = f"n/a ({type(err).__name__}: {err})"
        print(f"{name}\t{count}")
    return 0


def _add_datasets(sub):
    p = sub.add_parser(
        "datasets",
        help="list registered datasets, or check a bring-your-own-data folder",
        description="`emofusion datasets` lists dataset names; `emofusion datasets check PATH` validates a "
        "folder in the bring-your-own-data format and reports every problem at once.",
    )
    p.add_argument("action", nargs="?", choices=["list", "check"], default="list")
    p.add_argument("path", nargs="?", help="folder to check")
    p.set_defaults(func=cmd_datasets)


def cmd_datasets(args) -> int:
    from emofusion.data import DATASETS

    if args.action == "check":
        if not args.path:
            print("emofusion datasets check: give the folder to check", file=sys.stderr)
            return 2
        from emofusion.data.folder import check_folder_command

        return check_folder_command(args.path)
    for name in DATASETS.names():
        print(f"{name}\t{DATASETS.description(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emofusion",
        description="Multimodal emotion and sentiment recognition: train, evaluate and compare fusion models "
        "on unaligned multi-rate text, audio and visual sequences.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks)")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of any error")
    parser.add_argument("--version", action="version", version=f"emofusion {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train, _add_evaluate, _add_ensemble, _add_models, _add_datasets):
        add(sub)
    for module_name in EXTRA_COMMANDS:
        importlib.import_module(module_name).register_cli(sub)
    return parser


def _version() -> str:
    from emofusion import __version__

    return __version__


def _parse(parser: argparse.ArgumentParser, argv):
    """Like parse_args, but key=value overrides may come anywhere (``... data.n_train=60 --output X lr=1e-3``):
    argparse only collects one contiguous group of positionals, the rest are appended here."""
    args, rest = parser.parse_known_args(argv)
    if rest and hasattr(args, "overrides"):
        extra = [r for r in rest if "=" in r and not r.startswith("-")]
        rest = [r for r in rest if r not in extra]
        args.overrides = list(args.overrides or []) + extra
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input, not a bug: one line, exit 2 (--debug shows the traceback)."""
    from emofusion.data.format_utils import DataFormatError

    errors: list[type[BaseException]] = [DataFormatError, FileNotFoundError, IsADirectoryError,
                                         NotADirectoryError, PermissionError, KeyError, ValueError]
    try:
        from emofusion.training.callbacks import NonFiniteError

        errors.append(NonFiniteError)
    except ImportError:  # torch missing: nothing of the training layer can have raised
        pass
    return tuple(errors)


def main(argv=None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if args.verbose or args.debug or not isinstance(err, _user_errors()):
            raise  # a bug: the traceback is what a report needs
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        lines = str(message).strip().splitlines() or [type(err).__name__]
        print(f"emofusion {args.command}: error: {lines[0]}", file=sys.stderr)
        for line in lines[1:21]:  # multi-problem reports (folder check) keep their list
            print(f"  {line.strip()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
