"""Train and publish once, in this process, unless Redis already holds a published model.

``python -m tasks.bootstrap [--force]`` is what ``make run`` (and a fresh deployment) runs before starting
the web, so the first request already finds a model instead of a 503. It runs the ``tasks.train`` task
itself, locally (``Task.apply``): the same lock, stages, quality gate and publish, without needing a broker
or a running worker. Exit status 0 when a model is published (now or before), 1 when the run was skipped or
rejected (the outcome, with its reason, is printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tasks import settings
from tasks.training import recs_cache, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train and publish a model once, unless one is published.")
    parser.add_argument("--force", action="store_true", help="train even if a published model exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cache = recs_cache()
    current = cache.current_version()
    if current and cache.is_published(current) and not args.force:
        print(f"model {current} is already published; nothing to do (--force retrains)")
        return 0
    result = train.apply(kwargs={"force": args.force}).get()
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == "published" else 1


if __name__ == "__main__":
    sys.exit(main())
