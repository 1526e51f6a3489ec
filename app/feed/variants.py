"""The experiment's stage: which variant a user is in, and the ranking that variant serves.

:class:`VariantRanking` runs after :class:`app.feed.stages.Candidates` when an experiment is configured
(``EXPERIMENT``, see :mod:`common.experiments`). A ``production`` variant keeps the model's feed; a
``popular`` variant replaces it by the popularity list (without the posts the model excludes for the user,
as the model's feed is), and fresh posts still follow it. A ``model`` variant needs no stage: its scope is
already its own model's (the service resolves a new scroll of such a user to the variant's published version,
:meth:`app.feed.service.FeedService._variant_scope`), so the candidates are that model's list and ranking;
while the worker holds no model of the variant, or Redis lost its lists, the user gets the production feed
and the page says ``variant_fallback: true``. The service adds the experiment and variant to the page (the
assignment is a hash: recomputing it is the same answer), and to the page's entry in the ``served`` stream
with the ranking that served it (``model`` for the variant's own model, ``production`` for its fallback).
"""

from __future__ import annotations

from dataclasses import replace

from app.feed.ranked import Fixed, isin
from app.feed.stages import Feed
from common.experiments import Experiment


class VariantRanking:
    """Assign the user to a variant of ``experiment`` and give the feed that variant's ranking."""

    def __init__(self, experiment: Experiment):
        self._experiment = experiment

    def __call__(self, feed: Feed) -> Feed:
        variant = self._experiment.assign(feed.request.user_id)
        if variant.ranking != "popular":
            return feed
        model = feed.scope.loaded.model
        user = feed.scope.user
        ids, scores = model.popular_items, model.popular_scores
        excluded = model.excluded_items(user) if user is not None else ()
        if len(excluded):
            kept = ~isin(ids, excluded)
            ids, scores = ids[kept], scores[kept]
        source = "cache" if feed.scope.redis_answered else "model"
        return replace(
            feed,
            ranking=Fixed(ids, scores),
            strategy="popular",
            source=source,
            vector=None,  # fresh posts follow the popularity list, newest first
        )
