"""The page-split benchmark runs end to end and times every part of the feed path it names."""

from __future__ import annotations

import re
import subprocess
import sys

from testing.processes import REPO


def test_page_split_benchmark_times_each_part_of_both_feeds():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.page_split", "--users", "3000", "--requests", "300", "--rounds", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        part.strip(): (float(plain), float(live), float(live_calls))
        for part, plain, _, live, live_calls in re.findall(
            r"^\| ([^|]+) \| ([\d.]+)( \([\d.]+\))? \| ([\d.]+)(?: \(([\d.]+)\))? \|$", done.stdout, re.MULTILINE
        )
        if not part.startswith("whole")
    }
    assert list(rows) == [
        "the shortcut reads the request (path, query arguments)",
        "resolving the scope (FeedService._resolve)",
        "the Redis read (RecsCache.user_reads: one round trip)",
        "unpacking and checking the list, keeping it in the memo",
        "looking the list up in the worker's memo",
        "keeping the user's exclusions in the live mirror",
        "stage Candidates",
        "stage CommunityTagFilter",
        "stage FreshPosts",
        "stage Exclusions",
        "the page (Page: cutting the response out of the feed)",
        "rendering positions no page showed yet (the rankings compute here)",
        "keeping the feed, the list and rankings (Lru.put, dropping the oldest)",
        "the request's metrics (count and latency)",
        "encoding the response (orjson)",
        "queueing the page for the served stream (impressions)",
    ], done.stdout
    for part, (_, live_us, live_calls) in rows.items():
        assert live_calls > 0 and live_us > 0, part  # every part ran and was timed on the live feed
    # Most users are new to the worker: a page reads Redis; one part runs inside the other.
    read = rows["the Redis read (RecsCache.user_reads: one round trip)"]
    assert read[0] > 0 and read[2] > 0.2
    assert read[1] < rows["resolving the scope (FeedService._resolve)"][1]
    whole = re.search(r"^\| whole request, wall \| ([\d.]+) \| ([\d.]+) \|$", done.stdout, re.MULTILINE)
    assert whole is not None and float(whole[2]) > rows["the page (Page: cutting the response out of the feed)"][1]
