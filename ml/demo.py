"""Demo data: a seeded, synthetic K-pop community written as a dataset directory (DESIGN section 3).

The data has a planted structure that a hybrid recommender can learn and a popularity ranking cannot:

- Eight hidden topics (music, performance, dance, visuals, fan art, variety, talk, merch). Each community
  (fandom) has its own mix of topics; each tag belongs to one topic.
- A post has a community, a main topic drawn from the community's mix, and 1-4 tags mostly of that topic,
  so its topic vector is visible through its tags and community (item features).
- A user follows 1-5 communities (popular and related ones more often) and has a hidden taste over topics,
  half from the communities followed (user features), half personal (only visible through the user's own
  interactions: the collaborative part).
- Each view picks either a followed community (70%) or the whole site, then a topic by the user's taste,
  then a post of that topic by its long-tailed popularity (log-normal, scaled by how long the post has been
  online). Likes and comments follow a view more often the better the post fits the user's taste.
- Posts appear over 90 days; a view comes after the post's creation (exponentially decaying attention),
  likes and comments minutes after the view. Tastes do not change over time, so a user's later
  interactions are predictable from the earlier ones (the temporal split of DESIGN section 9).

Everything is vectorised with numpy and drawn from one ``numpy.random.Generator``, so a seed always gives
the same bytes, and 2,000,000 interactions take seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.dataset import COLUMNS, INTERACTION_TYPES, TAG_SEPARATOR
from ml.timestamps import format_timestamps

logger = logging.getLogger(__name__)

DEFAULT_USERS = 500
DEFAULT_POSTS = 2016
DEFAULT_INTERACTIONS = 50_000
DEFAULT_SEED = 42

# (id, name), most popular first.
COMMUNITIES: tuple[tuple[str, str], ...] = (
    ("bts", "BTS (ARMY)"),
    ("blackpink", "BLACKPINK (BLINK)"),
    ("stray-kids", "Stray Kids (STAY)"),
    ("seventeen", "SEVENTEEN (CARAT)"),
    ("twice", "TWICE (ONCE)"),
    ("newjeans", "NewJeans (Bunnies)"),
    ("aespa", "aespa (MY)"),
    ("ive", "IVE (DIVE)"),
    ("le-sserafim", "LE SSERAFIM (FEARNOT)"),
    ("enhypen", "ENHYPEN (ENGENE)"),
    ("txt", "TOMORROW X TOGETHER (MOA)"),
    ("ateez", "ATEEZ (ATINY)"),
    ("exo", "EXO (EXO-L)"),
    ("red-velvet", "Red Velvet (ReVeluv)"),
    ("gidle", "(G)I-DLE (Neverland)"),
    ("itzy", "ITZY (MIDZY)"),
    ("nct-127", "NCT 127 (NCTzen)"),
    ("nct-dream", "NCT DREAM (NCTzen)"),
    ("babymonster", "BABYMONSTER (MONSTIEZ)"),
    ("illit", "ILLIT (GLLIT)"),
    ("riize", "RIIZE (BRIIZE)"),
    ("zerobaseone", "ZEROBASEONE (ZEROSE)"),
    ("treasure", "TREASURE (Teume)"),
    ("mamamoo", "MAMAMOO (MooMoo)"),
    ("shinee", "SHINee (Shawol)"),
    ("bigbang", "BIGBANG (VIP)"),
    ("girls-generation", "Girls' Generation (SONE)"),
    ("monsta-x", "MONSTA X (Monbebe)"),
    ("the-boyz", "THE BOYZ (THE B)"),
    ("stayc", "STAYC (SWITH)"),
    ("kiss-of-life", "KISS OF LIFE (KISSY)"),
    ("fromis-9", "fromis_9 (flover)"),
)

# Tags of each hidden topic.
TOPIC_TAGS: dict[str, tuple[str, ...]] = {
    "music": ("music", "album", "lyrics", "comeback", "mv"),
    "performance": ("concert", "stage", "performance", "tour", "award"),
    "dance": ("dance", "challenge", "cover", "practice"),
    "visuals": ("photo", "fashion", "selca", "airport"),
    "fanart": ("fanart", "edit", "drawing"),
    "variety": ("behind", "vlog", "variety", "funny", "livestream"),
    "talk": ("news", "discussion", "theory", "question"),
    "merch": ("merch", "photocard", "unboxing"),
}
ROLES: tuple[str, ...] = ("fan", "moderator", "artist")
ROLE_SHARE = np.array([0.90, 0.06, 0.04])

END = np.datetime64("2026-11-01T00:00:00", "s").astype(np.int64)  # a fixed end keeps output deterministic
WINDOW_SECONDS = 90 * 86400
DAY = 86400

_FOLLOW_SHARE = 0.7  # of views through a followed community rather than the whole site
_ATTENTION_SECONDS = 3 * DAY  # mean delay between a post's creation and a view
_FOLLOW_COUNTS = np.array([0.35, 0.30, 0.18, 0.10, 0.07])  # share of users following 1..5 communities
_AUTHOR_WEIGHT = np.array([1.0, 3.0, 25.0])  # per role: artists post the most
_WRITE_ROWS = 250_000  # lines built and written at a time, to bound memory


def generate(
    out_dir: str | Path,
    users: int = DEFAULT_USERS,
    posts: int = DEFAULT_POSTS,
    interactions: int = DEFAULT_INTERACTIONS,
    seed: int = DEFAULT_SEED,
) -> dict[str, int]:
    """Write a demo dataset directory.

    Parameters
    ----------
    out_dir : str or Path
        Created if missing; the five CSV files in it are replaced.
    users, posts : int
        Numbers of users and posts (at least 1 each).
    interactions : int
        Exact number of interaction rows (views, likes and comments together).
    seed : int
        The same seed gives byte-identical files.

    Returns
    -------
    dict of str to int
        Rows written per table.
    """
    if users < 1 or posts < 1 or interactions < 0:
        raise ValueError("users and posts must be at least 1 and interactions at least 0")
    world = plant(users, posts, seed)
    rng, roles, taste, tags = world.rng, world.roles, world.taste, world.tags
    follow_user, follow_community = world.follow_user, world.follow_community
    post_community, post_time, post_topic_mix = world.post_community, world.post_time, world.post_topic_mix
    post_tags, post_author, popularity = world.post_tags, world.post_author, world.popularity

    inter_user, inter_item, inter_type, inter_time = _interactions(
        rng, interactions, roles, taste, follow_user, follow_community, post_community, post_topic_mix,
        popularity, post_time,
    )  # fmt: skip
    user_time = _user_times(rng, users, inter_user, inter_time, post_author, post_time)
    follow_time = np.minimum(user_time[follow_user] + rng.integers(0, 3 * DAY, size=len(follow_user)), END)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    user_ids = _ids("user", users)
    post_ids = _ids("post", posts)
    community_ids = np.array([c.encode() for c, _ in COMMUNITIES])
    tag_text = np.array([TAG_SEPARATOR.join(tags[t] for t in row).encode() for row in post_tags])
    author_ids = np.where(post_author >= 0, user_ids[np.maximum(post_author, 0)], b"")
    role_names = np.array([r.encode() for r in ROLES])
    type_names = np.array([t.encode() for t in INTERACTION_TYPES])

    _write_csv(out / "users.csv", COLUMNS["users"], [user_ids, role_names[roles], format_timestamps(user_time)])
    with _replacing(out / "communities.csv") as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS["communities"])
        writer.writerows(COMMUNITIES)
    _write_csv(
        out / "follows.csv",
        COLUMNS["follows"],
        [user_ids[follow_user], community_ids[follow_community], format_timestamps(follow_time)],
    )
    _write_csv(
        out / "posts.csv",
        COLUMNS["posts"],
        [post_ids, community_ids[post_community], author_ids, tag_text, format_timestamps(post_time)],
    )
    _write_csv(
        out / "interactions.csv",
        COLUMNS["interactions"],
        [user_ids[inter_user], post_ids[inter_item], type_names[inter_type], format_timestamps(inter_time)],
    )
    counts = {
        "users": users,
        "communities": len(COMMUNITIES),
        "follows": len(follow_user),
        "posts": posts,
        "interactions": len(inter_user),
    }
    logger.info("wrote demo dataset to %s: %s", out, counts)
    return counts


@dataclass(frozen=True)
class Planted:
    """The hidden structure of a demo dataset, before any interaction is drawn.

    ``taste`` (users x topics) and ``post_topic_mix`` (posts x topics) are the planted preferences a
    recommender should learn; ``benchmarks/experiment.py`` lets simulated users click by them. ``rng`` is
    the generator, positioned where :func:`generate` goes on to draw the interactions.
    """

    rng: np.random.Generator
    tags: list[str]
    roles: np.ndarray
    follow_user: np.ndarray
    follow_community: np.ndarray
    taste: np.ndarray
    post_community: np.ndarray
    post_time: np.ndarray
    post_topic_mix: np.ndarray
    post_tags: list
    post_author: np.ndarray
    popularity: np.ndarray


def plant(users: int = DEFAULT_USERS, posts: int = DEFAULT_POSTS, seed: int = DEFAULT_SEED) -> Planted:
    """The planted structure of the dataset :func:`generate` writes for the same users, posts and seed."""
    rng = np.random.default_rng(seed)
    topics = list(TOPIC_TAGS)
    tags = [tag for topic in topics for tag in TOPIC_TAGS[topic]]
    tag_topic = np.array([topics.index(t) for t in topics for _ in TOPIC_TAGS[t]])
    num_topics, num_communities = len(topics), len(COMMUNITIES)

    community_mix = rng.dirichlet(np.full(num_topics, 0.6), size=num_communities)
    community_weight = 1.0 / np.arange(1, num_communities + 1) ** 0.9 * rng.uniform(0.8, 1.2, num_communities)
    community_weight /= community_weight.sum()

    roles = rng.choice(len(ROLES), size=users, p=ROLE_SHARE)
    follow_user, follow_community = _follows(rng, users, community_mix, community_weight)
    taste = _tastes(rng, users, num_topics, community_mix, follow_user, follow_community)

    post_community = rng.choice(num_communities, size=posts, p=community_weight**0.8 / (community_weight**0.8).sum())
    post_time = END - rng.integers(0, WINDOW_SECONDS, size=posts)
    post_topic_mix, post_tags = _post_topics(rng, community_mix, post_community, tag_topic)
    post_author = _authors(rng, post_community, follow_user, follow_community, roles)
    # Long-tailed appeal, realised in proportion to the attention a post could gather since it appeared.
    popularity = rng.lognormal(0.0, 1.3, size=posts) * (1.0 - np.exp(-(END - post_time) / _ATTENTION_SECONDS))
    return Planted(
        rng, tags, roles, follow_user, follow_community, taste, post_community, post_time, post_topic_mix,
        post_tags, post_author, popularity,
    )  # fmt: skip


def _follows(
    rng: np.random.Generator, users: int, community_mix: np.ndarray, community_weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each user follows 1-5 distinct communities: a first by popularity, the others popular or alike."""
    num_communities = len(community_weight)
    count = rng.choice(np.arange(1, 6), size=users, p=_FOLLOW_COUNTS)
    first = rng.choice(num_communities, size=users, p=community_weight)
    norm = community_mix / np.linalg.norm(community_mix, axis=1, keepdims=True)
    similarity = (norm @ norm.T)[first]  # users x communities
    # Gumbel top-k: distinct communities drawn with weights popularity x exp(3 x similarity to the first).
    score = np.log(community_weight) + 3.0 * similarity + rng.gumbel(size=(users, num_communities))
    score[np.arange(users), first] = np.inf
    ranked = np.argsort(-score, axis=1, kind="stable")[:, :5]
    keep = np.arange(5) < count[:, None]
    follow_user = np.repeat(np.arange(users), count)
    return follow_user, ranked[keep]


def _tastes(
    rng: np.random.Generator,
    users: int,
    num_topics: int,
    community_mix: np.ndarray,
    follow_user: np.ndarray,
    follow_community: np.ndarray,
) -> np.ndarray:
    """Each user's hidden taste over topics: half the communities followed, half personal, then sharpened."""
    followed = np.zeros((users, num_topics))
    np.add.at(followed, follow_user, community_mix[follow_community])
    followed /= followed.sum(axis=1, keepdims=True)
    personal = rng.dirichlet(np.full(num_topics, 0.4), size=users)
    base = 0.5 * followed + 0.5 * personal
    sharpened = rng.gamma(base + 1e-3)  # a Dirichlet draw per user around ``base``, most mass on few topics
    return sharpened / sharpened.sum(axis=1, keepdims=True)


def _post_topics(
    rng: np.random.Generator, community_mix: np.ndarray, post_community: np.ndarray, tag_topic: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A main topic from the community's mix, 1-4 tags (70% of them of the main topic), and the topic vector."""
    posts, num_topics = len(post_community), community_mix.shape[1]
    main = _categorical(rng, community_mix, post_community)
    count = rng.choice(np.arange(1, 5), size=posts, p=[0.3, 0.35, 0.25, 0.1])
    slots = np.repeat(np.arange(posts), count)
    on_topic = rng.random(len(slots)) < 0.7
    slot_topic = np.where(on_topic, main[slots], rng.integers(0, num_topics, size=len(slots)))
    # A tag uniformly among those of the slot's topic.
    by_topic = np.argsort(tag_topic, kind="stable")
    starts = np.searchsorted(tag_topic[by_topic], np.arange(num_topics))
    sizes = np.bincount(tag_topic, minlength=num_topics)
    slot_tag = by_topic[starts[slot_topic] + (rng.random(len(slots)) * sizes[slot_topic]).astype(np.int64)]
    topic_vector = np.zeros((posts, num_topics))
    np.add.at(topic_vector, slots, np.eye(num_topics)[tag_topic[slot_tag]] / count[slots, None])
    topic_vector = 0.6 * np.eye(num_topics)[main] + 0.4 * topic_vector
    # Each post's tags in drawn order, without repeats.
    post_tags = [list(dict.fromkeys(row)) for row in np.split(slot_tag.tolist(), np.cumsum(count)[:-1])]
    return topic_vector, post_tags


def _authors(
    rng: np.random.Generator,
    post_community: np.ndarray,
    follow_user: np.ndarray,
    follow_community: np.ndarray,
    roles: np.ndarray,
) -> np.ndarray:
    """A follower of the post's community (artists most often) writes it; 3% have no author (deleted)."""
    author = np.full(len(post_community), -1, dtype=np.int64)
    weight = _AUTHOR_WEIGHT[roles[follow_user]]
    for community in np.unique(post_community):
        members = np.flatnonzero(follow_community == community)
        target = np.flatnonzero(post_community == community)
        if len(members) == 0:
            continue
        cdf = np.cumsum(weight[members])
        pick = np.searchsorted(cdf, rng.random(len(target)) * cdf[-1], side="right")
        author[target] = follow_user[members[np.minimum(pick, len(members) - 1)]]
    author[rng.random(len(author)) < 0.03] = -1
    return author


def _interactions(
    rng: np.random.Generator,
    total: int,
    roles: np.ndarray,
    taste: np.ndarray,
    follow_user: np.ndarray,
    follow_community: np.ndarray,
    post_community: np.ndarray,
    post_topic_mix: np.ndarray,
    popularity: np.ndarray,
    post_time: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exactly ``total`` rows of views, each followed by a like and a comment with some probability."""
    users, num_topics = taste.shape
    num_communities = len(COMMUNITIES)
    # Up to ``total`` views; every view brings at least one row, so that many always suffice.
    activity = rng.lognormal(0.0, 1.0, size=users) * np.array([1.0, 2.0, 1.5])[roles]
    per_user = rng.multinomial(total, activity / activity.sum())
    user = rng.permutation(np.repeat(np.arange(users), per_user))

    topic = _categorical(rng, taste, user)
    follows_per_user = np.bincount(follow_user, minlength=users)
    follow_start = np.concatenate([[0], np.cumsum(follows_per_user)[:-1]])
    picked = follow_start[user] + (rng.random(len(user)) * follows_per_user[user]).astype(np.int64)
    community = np.where(rng.random(len(user)) < _FOLLOW_SHARE, follow_community[picked], num_communities)

    # Draw each view's post from the table of its (community or whole site, topic) by popularity x topic share.
    key = community * num_topics + topic
    post = np.zeros(len(user), dtype=np.int64)
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange((num_communities + 1) * num_topics + 1))
    for table in range(len(bounds) - 1):
        rows = order[bounds[table] : bounds[table + 1]]
        if len(rows) == 0:
            continue
        where, k = divmod(table, num_topics)
        members = np.flatnonzero(post_community == where) if where < num_communities else np.arange(len(popularity))
        if len(members) == 0:  # a community without posts: the whole site instead
            members = np.arange(len(popularity))
        cdf = np.cumsum(popularity[members] * post_topic_mix[members, k])
        pick = np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1], side="right")
        post[rows] = members[np.minimum(pick, len(members) - 1)]

    affinity = sum(taste[user, k] * post_topic_mix[post, k] for k in range(num_topics))
    like = rng.random(len(user)) < (0.08 + 0.45 * affinity) * np.array([1.0, 1.0, 0.7])[roles[user]]
    comment = rng.random(len(user)) < (0.02 + 0.12 * affinity) * np.array([1.0, 2.5, 1.0])[roles[user]]
    horizon = (END - post_time[post]).astype(np.float64)
    # A view's delay after the post: exponential, truncated at the end of the window.
    delay = -_ATTENTION_SECONDS * np.log1p(-rng.random(len(user)) * -np.expm1(-horizon / _ATTENTION_SECONDS))
    view_time = post_time[post] + delay.astype(np.int64)

    # Rows per view in order: the view, its like, its comment; the first ``total`` rows are kept.
    kinds = np.stack([np.ones(len(user), dtype=bool), like, comment], axis=1)
    view_index, kind = np.nonzero(kinds)
    view_index, kind = view_index[:total], kind[:total]
    after = np.select(
        [kind == 1, kind == 2], [rng.integers(5, 600, size=len(kind)), rng.integers(60, 3600, size=len(kind))], 0
    )
    times = np.minimum(view_time[view_index] + after, END)
    return user[view_index], post[view_index], kind.astype(np.int8), times


def _user_times(
    rng: np.random.Generator,
    users: int,
    inter_user: np.ndarray,
    inter_time: np.ndarray,
    post_author: np.ndarray,
    post_time: np.ndarray,
) -> np.ndarray:
    """Sign-up times: up to 20 days before a user's first interaction or post; anywhere for idle users."""
    first = END - rng.integers(0, WINDOW_SECONDS + 30 * DAY, size=users)
    np.minimum.at(first, inter_user, inter_time)
    authored = post_author >= 0
    np.minimum.at(first, post_author[authored], post_time[authored])
    return first - rng.integers(0, 20 * DAY, size=users)


def _categorical(rng: np.random.Generator, probabilities: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw from each ``probabilities[rows[i]]`` (column by column, so no len(rows) x K matrix is built)."""
    cdf = np.cumsum(probabilities, axis=1)
    target = rng.random(len(rows)) * cdf[rows, -1]
    drawn = np.zeros(len(rows), dtype=np.int64)
    for column in range(cdf.shape[1] - 1):
        drawn += cdf[rows, column] < target
    return drawn


def _ids(prefix: str, count: int) -> np.ndarray:
    """``prefix-0001``-style ids, zero-padded to the width of the largest one so they sort as numbers."""
    width = max(4, len(str(count)))
    return np.strings.add(f"{prefix}-".encode(), np.strings.zfill(np.arange(1, count + 1).astype("S"), width))


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path``, moved onto it when the block succeeds (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _write_csv(path: Path, header: tuple[str, ...], columns: list[np.ndarray]) -> None:
    """Write byte-string columns as CSV; the values are generated tokens that never need quoting."""
    with _replacing(path) as tmp, tmp.open("wb") as f:
        f.write(",".join(header).encode() + b"\n")
        for start in range(0, len(columns[0]), _WRITE_ROWS):
            lines = columns[0][start : start + _WRITE_ROWS]
            for column in columns[1:]:
                lines = np.strings.add(np.strings.add(lines, b","), column[start : start + _WRITE_ROWS])
            f.write(b"\n".join(lines.tolist()) + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.demo", description="Write a demo dataset directory.")
    parser.add_argument("--out", required=True, help="directory to write the five CSV files to")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help=f"number of users (default {DEFAULT_USERS})")
    parser.add_argument("--posts", type=int, default=DEFAULT_POSTS, help=f"number of posts (default {DEFAULT_POSTS})")
    parser.add_argument(
        "--interactions",
        type=int,
        default=DEFAULT_INTERACTIONS,
        help=f"number of interaction rows (default {DEFAULT_INTERACTIONS})",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    args = parser.parse_args(argv)
    if args.users < 1 or args.posts < 1 or args.interactions < 0:
        parser.error("--users and --posts must be at least 1, --interactions at least 0")
    if args.seed < 0:
        parser.error("--seed must be at least 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    counts = generate(args.out, args.users, args.posts, args.interactions, args.seed)
    summary = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"wrote {args.out}: {summary} in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
