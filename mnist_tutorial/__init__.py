"""Helpers for the MNIST tutorial book: data, models, training, evaluation."""

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_pretrained,
    pretrained_card,
    save_checkpoint,
)
from .data import (
    DataRootError,
    DatasetUnavailableError,
    MnistData,
    Split,
    default_data_root,
    denormalize,
    download_mnist,
    load_mnist,
    normalize,
)
from .device import select_device
from .errors import ConfigError, MnistTutorialError, ModelOutputError
from .evaluate import Predictions, fit_temperature, metrics, predict_split
from .measures import centre_of_mass, ink_area, ink_box, slant
from .model import Network, available_models, build_model, count_parameters, summarize
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
from .records import (
    RECIPES,
    History,
    Recipe,
    TrainConfig,
    TrainingRun,
    TrainingState,
    recipe,
)
from .train import fit

__all__ = [
    "RECIPES",
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
    "Network",
    "Prediction",
    "Predictions",
    "Predictor",
    "PreprocessSteps",
    "Recipe",
    "Split",
    "TrainConfig",
    "TrainingRun",
    "TrainingState",
    "available_models",
    "build_model",
    "centre_of_mass",
    "count_parameters",
    "default_data_root",
    "denormalize",
    "download_mnist",
    "fit",
    "fit_temperature",
    "ink_area",
    "ink_box",
    "load_checkpoint",
    "load_mnist",
    "load_pretrained",
    "metrics",
    "normalize",
    "predict_folder",
    "predict_image",
    "predict_images",
    "predict_split",
    "preprocess_image",
    "pretrained_card",
    "recipe",
    "save_checkpoint",
    "select_device",
    "slant",
    "summarize",
]
