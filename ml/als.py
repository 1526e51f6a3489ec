"""The second model family: implicit's alternating least squares (ALS), as a :class:`~ml.model.RecModel`.

ALS factorises the weighted user × post matrix of :func:`ml.training.interaction_weights` into user and
post factors, with confidence ``1 + alpha * weight`` per observed pair; the interaction type weights and
the half-life are ALS's own (:class:`~ml.model_config.AlsSettings`), searched apart from LightFM's. It is
fast on a CPU at millions of interactions and, on data where plain collaborative filtering wins, ranks
better than a hybrid model.

Its score is the dot product of the factors, so it maps onto RecModel's representation with zero biases:
``top_k``, the precompute, Redis and the web serve it unchanged. ALS has no feature embeddings: the
artifact of an ALS model holds none, so a post written after the model's data were read cannot be scored
(the live feed puts it after the model's ranking, newest first) and a user the model does not know gets the
popularity feed (the ``features`` strategy is unavailable). A user known at training time without any
interaction gets the mean of the active users' factors: the ranking of an average user.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from ml.cpus import usable_cpus
from ml.dataset import Dataset
from ml.errors import TrainingError
from ml.model import RecModel
from ml.model_config import AlsSettings
from ml.settings import TrainingSettings
from ml.training import check_trainable, dataset_fields, interaction_weights

logger = logging.getLogger(__name__)


def train_als(dataset: Dataset, params: TrainingSettings, als: AlsSettings) -> RecModel:
    """Fit ALS on ``dataset`` and return its RecModel (zero biases, no feature embeddings).

    ``als`` gives the hyperparameters and the confidence weighting (interaction type weights, half-life,
    alpha); ``params`` gives ``num_threads`` and ``seed``.

    Raises
    ------
    TrainingError
        As :func:`ml.training.train`: nothing to learn from, or non-finite factors.
    """
    check_trainable(dataset)
    weighting = dataclasses.replace(
        params,
        weight_view=als.weight_view,
        weight_like=als.weight_like,
        weight_comment=als.weight_comment,
        half_life_days=als.half_life_days,
    )
    weights = interaction_weights(dataset, weighting).tocsr()
    if weights.nnz == 0:
        raise TrainingError("no interaction has a positive weight")
    started = time.perf_counter()
    # implicit parallelises over users itself; a multithreaded BLAS under it only contends (and implicit
    # warns about it when the estimator is built).
    with threadpool_limits(limits=1, user_api="blas"):
        estimator = AlternatingLeastSquares(
            factors=als.factors,
            regularization=als.regularization,
            alpha=als.alpha,
            iterations=als.iterations,
            num_threads=params.num_threads or usable_cpus(),
            random_state=params.seed,
        )
        estimator.fit(weights, show_progress=False)
    logger.info(
        "fitted ALS (%d factors, %d iterations) on %d pairs in %.2f s",
        als.factors,
        als.iterations,
        weights.nnz,
        time.perf_counter() - started,
    )
    users = np.ascontiguousarray(estimator.user_factors, dtype=np.float32)
    items = np.ascontiguousarray(estimator.item_factors, dtype=np.float32)
    if not (np.isfinite(users).all() and np.isfinite(items).all()):
        raise TrainingError("the ALS fit produced non-finite factors; raise the regularisation")
    active = np.diff(weights.indptr) > 0
    if (~active).any():
        users[~active] = users[active].mean(axis=0)
    return factor_model(dataset, users, items)


def factor_model(dataset: Dataset, users: np.ndarray, items: np.ndarray) -> RecModel:
    """The RecModel scoring ``users[u] · items[i]`` (biases 0), with the dataset's exclusions and popularity."""
    return RecModel(
        **dataset_fields(dataset),
        user_embeddings=np.ascontiguousarray(users, dtype=np.float32),
        user_biases=np.zeros(len(users), dtype=np.float32),
        item_embeddings=np.ascontiguousarray(items, dtype=np.float32),
        item_biases=np.zeros(len(items), dtype=np.float32),
    )
