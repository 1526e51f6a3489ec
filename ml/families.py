"""Fitting a :class:`~ml.model_config.ModelConfig`: LightFM, ALS or their blend, each a RecModel."""

from __future__ import annotations

import ml.training
from ml.als import train_als
from ml.blend import blend
from ml.dataset import Dataset
from ml.model import RecModel
from ml.model_config import ModelConfig


def train_model(dataset: Dataset, config: ModelConfig) -> RecModel:
    """Fit the configuration's family on ``dataset`` (:func:`ml.training.train`, :func:`ml.als.train_als`,
    or both blended). Raises :class:`TrainingError` as they do."""
    if config.family == "lightfm":
        return ml.training.train(dataset, config.training)
    als = train_als(dataset, config.training, config.als)
    if config.family == "als":
        return als
    return blend(ml.training.train(dataset, config.training), als, config.blend_weight)
