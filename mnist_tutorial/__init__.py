"""Helpers for the MNIST tutorial book: data, models, training, evaluation and your own digits."""

from .data import (
    DataRootError,
    DatasetUnavailableError,
    MnistData,
    Split,
    default_data_root,
    download_mnist,
    load_mnist,
)
from .errors import ConfigError, MnistTutorialError, ModelOutputError
from .evaluate import Predictions, metrics, predict_split
from .model import available_models, build_model, count_parameters, summarize
from .predict import (
    FileResult,
    InvalidImageError,
    Prediction,
    Predictor,
    PreprocessSteps,
    predict_folder,
    predict_image,
    predict_images,
    preprocess_image,
)
from .train import (
    Checkpoint,
    CheckpointError,
    History,
    TrainConfig,
    fit,
    load_checkpoint,
    load_pretrained,
    save_checkpoint,
    select_device,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "DataRootError",
    "DatasetUnavailableError",
    "FileResult",
    "History",
    "InvalidImageError",
    "MnistData",
    "MnistTutorialError",
    "ModelOutputError",
    "Prediction",
    "Predictions",
    "Predictor",
    "PreprocessSteps",
    "Split",
    "TrainConfig",
    "available_models",
    "build_model",
    "count_parameters",
    "default_data_root",
    "download_mnist",
    "fit",
    "load_checkpoint",
    "load_mnist",
    "load_pretrained",
    "metrics",
    "predict_folder",
    "predict_image",
    "predict_images",
    "predict_split",
    "preprocess_image",
    "save_checkpoint",
    "select_device",
    "summarize",
]
