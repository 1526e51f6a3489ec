"""Pages of a user's feed, built by a pipeline of stages (see :mod:`app.feed.stages`).

- :mod:`app.feed.pin`: the scroll token (model version, live generation, exclusion cutoff);
- :mod:`app.feed.service`: :class:`FeedService`, which resolves a request (one Redis round trip) and runs
  the stages;
- :mod:`app.feed.stages`: candidates → fresh posts → exclusions → page;
- :mod:`app.feed.ranked`: the lazy rankings the stages combine;
- :mod:`app.feed.live`, :mod:`app.feed.version_view`: a live pool and a model version as pages show them.
"""

from app.feed.pin import Pin
from app.feed.service import FeedService, NoModel
from app.feed.stages import FeedRequest

__all__ = ["FeedRequest", "FeedService", "NoModel", "Pin"]
