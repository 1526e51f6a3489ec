"""Reading and validating datasets: the directory reader, build_dataset and the error report."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from ml.csv_files import read_dataset_dir
from ml.dataset import INTERACTION_TYPES, Table
from ml.errors import DatasetError
from ml.validate import build_dataset
from tests.ml.datasets import dataset_records, tiny_tables, write_dataset_dir


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def test_reads_tiny_directory(tiny_dataset_dir):
    ds = read_dataset_dir(tiny_dataset_dir)

    assert ds.user_ids == ["u1", "u2", "u3", "u4"]
    assert ds.user_roles == ["fan", "fan", "artist", "moderator"]
    assert ds.community_ids == ["bts", "blackpink"]
    assert ds.community_names[1] == 'BLINK, "Pink" and all'
    assert ds.follow_user.tolist() == [0, 1, 1, 3]
    assert ds.follow_community.tolist() == [0, 0, 1, 1]
    assert ds.item_ids == ["p1", "p2", "p3", "p4", "p5"]
    assert ds.item_community.tolist() == [0, 0, 1, 1, 0]
    # Empty and unknown (deleted) authors are -1, not errors.
    assert ds.item_author.tolist() == [2, -1, 2, -1, 0]
    assert ds.item_tags == [("music", "concert"), ("fanart",), (), ("dance", "mv"), ("comeback",)]
    assert ds.item_time[0] == _ts("2026-02-01T10:00:00+00:00")
    assert ds.num_interactions == 12
    assert ds.inter_user[:4].tolist() == [0, 0, 0, 0]
    assert ds.inter_item[:4].tolist() == [0, 0, 1, 4]
    assert [INTERACTION_TYPES[t] for t in ds.inter_type[:2]] == ["view", "like"]
    assert ds.inter_time[0] == _ts("2026-02-01T11:00:00+00:00")
    # Repeats of a (user, post, type) are kept.
    assert (ds.inter_user[9:11].tolist(), ds.inter_item[9:11].tolist()) == ([3, 3], [3, 3])
    for array, dtype in [
        (ds.follow_user, np.int32),
        (ds.item_community, np.int32),
        (ds.item_author, np.int32),
        (ds.item_time, np.int64),
        (ds.inter_user, np.int32),
        (ds.inter_item, np.int32),
        (ds.inter_type, np.int8),
        (ds.inter_time, np.int64),
    ]:
        assert array.dtype == dtype


def test_timezones_and_naive_timestamps_are_utc(tmp_path):
    tables = tiny_tables()
    tables["posts"] = [
        ["p1", "bts", "", "", "2026-02-01T19:00:00+09:00"],
        ["p2", "bts", "", "", "2026-02-01 10:00:00"],
        ["p3", "bts", "", "", "2026-02-01T05:00-05"],
        ["p4", "bts", "", "", "2026-02-01T10:00:00.999999Z"],
        ["p5", "bts", "", "", "2026-02-01"],
    ]
    ds = read_dataset_dir(write_dataset_dir(tmp_path / "d", tables))
    ten = _ts("2026-02-01T10:00:00+00:00")
    assert ds.item_time.tolist() == [ten, ten, ten, ten, ten - 10 * 3600]


def test_empty_interactions_and_follows_are_valid(tmp_path):
    tables = tiny_tables()
    tables["interactions"] = []
    tables["follows"] = []
    ds = read_dataset_dir(write_dataset_dir(tmp_path / "d", tables))
    assert ds.num_interactions == 0 and ds.num_items == 5
    assert ds.inter_user.dtype == np.int32 and ds.follow_user.shape == (0,)


def _written(tmp_path, edit):
    tables = tiny_tables()
    edit(tables)
    return write_dataset_dir(tmp_path / "d", tables)


def _problems(tmp_path, edit) -> list[str]:
    with pytest.raises(DatasetError) as info:
        read_dataset_dir(_written(tmp_path, edit))
    return info.value.problems


def _set(table: str, row: int, column: int, value: str):
    def edit(tables):
        tables[table][row][column] = value

    return edit


def _add(table: str, row: list[str]):
    def edit(tables):
        tables[table].append(row)

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_add("users", ["u1", "fan", "2026-01-01"]), "users.csv:6: duplicate id 'u1' (first on line 2)"),
        (_add("users", ["", "fan", "2026-01-01"]), "users.csv:6: empty id"),
        (_add("communities", ["x" * 129, "long"]), f"communities.csv:4: id '{'x' * 60}...' is longer than 128"),
        (_set("users", 3, 2, "2026-02-30T00:00:00Z"), "users.csv:5: bad timestamp '2026-02-30T00:00:00Z'"),
        (_set("follows", 2, 0, "nobody"), "follows.csv:4: unknown user_id 'nobody' (no such user)"),
        (_set("follows", 0, 1, "exo"), "follows.csv:2: unknown community_id 'exo' (no such community)"),
        (_set("follows", 3, 0, "u2"), "follows.csv:5: repeated follow (first on line 4)"),
        (_set("follows", 1, 2, "yesterday"), "follows.csv:3: bad timestamp 'yesterday'"),
        (_add("posts", ["p1", "bts", "", "", "2026-02-01"]), "posts.csv:7: duplicate id 'p1' (first on line 2)"),
        (_set("posts", 2, 1, "twice"), "posts.csv:4: unknown community_id 'twice' (no such community)"),
        (_set("posts", 0, 2, "a" * 200), "posts.csv:2: author_id 'aaaa"),
        (_set("posts", 1, 4, "2026-02-02T10:00:00+25:00"), "posts.csv:3: bad timestamp"),
        (_set("interactions", 5, 0, "ghost"), "interactions.csv:7: unknown user_id 'ghost' (no such user)"),
        (_set("interactions", 0, 1, "p9"), "interactions.csv:2: unknown post_id 'p9' (no such post)"),
        (_set("interactions", 2, 1, ""), "interactions.csv:4: empty post_id"),
        (_set("interactions", 3, 1, "p" * 129), "interactions.csv:5: post_id 'pppp"),
        (_set("interactions", 11, 2, "share"), "interactions.csv:13: unknown interaction type 'share' (expected view"),
        (_set("interactions", 11, 2, "View"), "interactions.csv:13: unknown interaction type 'View'"),
        (
            _set("interactions", 4, 3, "2026-13-01T00:00:00Z"),
            "interactions.csv:6: bad timestamp '2026-13-01T00:00:00Z'",
        ),
        (_set("interactions", 4, 3, ""), "interactions.csv:6: bad timestamp ''"),
        (
            _set("interactions", 4, 3, "9999-12-31T23:59:59Z"),
            "interactions.csv:6: timestamp '9999-12-31T23:59:59Z' in created_at is more than a day ahead of now",
        ),
        (_set("posts", 1, 4, "2999-01-01"), "posts.csv:3: timestamp '2999-01-01' in created_at is more than a day"),
        (lambda t: t["interactions"][6].append("extra"), "interactions.csv:8: expected 4 columns, found 5"),
        (_add("users", ["u9", "fan"]), "users.csv:6: expected 3 columns, found 2"),
    ],
)
def test_each_bad_row_is_reported_with_file_and_line(tmp_path, edit, expected):
    problems = _problems(tmp_path, edit)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


@pytest.mark.parametrize("line", [3, 50, 302])
def test_a_byte_that_is_not_utf8_is_reported_on_its_own_line(tmp_path, line):
    """The decoder reads ahead in blocks, so the reader's line count alone named the wrong line (or line 1)."""
    tables = tiny_tables()
    tables["users"] += [[f"extra-{n}", "fan", "2026-01-01"] for n in range(400)]
    users = write_dataset_dir(tmp_path / "d", tables) / "users.csv"
    lines = users.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b"fan", b"f\xe9n", 1)
    users.write_bytes(b"\n".join(lines))
    with pytest.raises(DatasetError) as info:
        read_dataset_dir(users.parent)
    assert info.value.problems[0].startswith(f"users.csv:{line}: not UTF-8"), info.value.problems


def test_every_problem_is_reported_at_once(tmp_path):
    def edit(tables):
        tables["users"][0][2] = "bad"
        tables["posts"][2][1] = "nope"
        tables["interactions"][0][2] = "share"
        tables["interactions"][9][1] = "p404"

    problems = _problems(tmp_path, edit)
    assert [p.split(": ")[0] for p in problems] == [
        "users.csv:2",
        "posts.csv:4",
        "interactions.csv:2",
        "interactions.csv:11",
    ]


def test_message_is_capped_but_problems_are_all_counted(tmp_path):
    def edit(tables):
        tables["interactions"] = [["u1", "p1", "share", "2026-02-01T00:00:00Z"]] * 1500

    with pytest.raises(DatasetError) as info:
        read_dataset_dir(_written(tmp_path, edit))
    error = info.value
    assert "1500 problem(s)" in str(error)
    assert error.problems[-1] == "interactions.csv: 500 more problem(s) not listed"
    assert len(error.problems) == 1001
    assert "... and 981 more" in str(error)


def test_line_numbers_count_blank_lines_and_quoted_newlines(tiny_dataset_dir):
    communities = tiny_dataset_dir / "communities.csv"
    communities.write_text('id,name\n\nbts,"BTS\nARMY"\n\nblackpink,BLINK\nbts,again\n', encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        read_dataset_dir(tiny_dataset_dir)
    assert info.value.problems == ["communities.csv:7: duplicate id 'bts' (first on line 3)"]


def test_header_must_match_exactly(tiny_dataset_dir):
    (tiny_dataset_dir / "follows.csv").write_text("user_id,community\nu1,bts\n", encoding="utf-8")
    (tiny_dataset_dir / "posts.csv").write_text("", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        read_dataset_dir(tiny_dataset_dir)
    assert info.value.problems == [
        "follows.csv:1: header is 'user_id,community', expected 'user_id,community_id,created_at'",
        "posts.csv:1: empty file, expected header id,community_id,author_id,tags,created_at",
    ]


def test_missing_file_and_missing_directory(tiny_dataset_dir, tmp_path):
    (tiny_dataset_dir / "interactions.csv").unlink()
    with pytest.raises(DatasetError, match=r"interactions.csv: missing \(expected columns user_id,post_id"):
        read_dataset_dir(tiny_dataset_dir)
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset_dir(tmp_path / "nowhere")


def test_invalid_utf8_is_reported_with_its_file(tiny_dataset_dir):
    (tiny_dataset_dir / "communities.csv").write_bytes(b"id,name\nbts,BTS\nexo,\xff\xfe\n")
    with pytest.raises(DatasetError, match=r"communities.csv:3: not UTF-8 \(byte 0xff: invalid start byte\)"):
        read_dataset_dir(tiny_dataset_dir)


def test_utf8_bom_and_crlf_are_accepted(tiny_dataset_dir):
    (tiny_dataset_dir / "communities.csv").write_bytes(
        "\ufeffid,name\r\nbts,방탄소년단\r\nblackpink,BLINK\r\n".encode()
    )
    ds = read_dataset_dir(tiny_dataset_dir)
    assert ds.community_names == ["방탄소년단", "BLINK"]


def test_build_dataset_accepts_python_rows_datetimes_and_tag_lists():
    tables = {name: Table(f"query {name}", rows) for name, rows in tiny_tables().items()}
    seoul = timezone(timedelta(hours=9))
    tables["posts"] = Table(
        "query posts",
        [
            ("p1", "bts", None, ["music", "concert", ""], datetime(2026, 2, 1, 19, 0, tzinfo=seoul)),
            ("p2", "bts", "u1", None, datetime(2026, 2, 1, 10, 0, 30)),
            ("p3", "blackpink", "u3", "fanart", "2026-02-01T10:00:00Z"),
            ("p4", "blackpink", "", [], "2026-02-01T10:00:00Z"),
            ("p5", "bts", "u1", "", "2026-02-01T10:00:00Z"),
        ],
    )
    ds = build_dataset(tables)
    ten = int(datetime(2026, 2, 1, 10, tzinfo=UTC).timestamp())
    assert ds.item_time.tolist() == [ten, ten + 30, ten, ten, ten]
    assert ds.item_tags[:2] == [("music", "concert"), ()]
    assert ds.item_author.tolist()[:2] == [-1, 0]


def test_build_dataset_numbers_query_rows_from_one():
    tables = {name: Table(f"SQL_{name.upper()} query", rows) for name, rows in tiny_tables().items()}
    tables["interactions"] = Table(
        "SQL_INTERACTIONS query",
        [("u1", "p1", "like", "2026-02-01T00:00:00Z")] * 2 + [("u1", "missing", "like", "2026-02-01T00:00:00Z")],
    )
    with pytest.raises(DatasetError) as info:
        build_dataset(tables, name="database")
    assert str(info.value).startswith("database has 1 problem(s):")
    assert info.value.problems == ["SQL_INTERACTIONS query:3: unknown post_id 'missing' (no such post)"]


def test_build_dataset_requires_all_tables():
    with pytest.raises(DatasetError, match="lacks the tables follows, interactions"):
        build_dataset({n: Table(n, []) for n in ("users", "communities", "posts")})


def test_large_tables_cross_chunk_boundaries(tmp_path):
    """Positions and line numbers stay right past the reader's chunk size (65,536 rows)."""
    tables = tiny_tables()
    n = 70_000
    tables["interactions"] = [["u1", "p1", "view", "2026-02-01T00:00:00Z"]] * n
    tables["interactions"][66_000] = ["u1", "p1", "vue", "2026-02-01T00:00:00Z"]
    with pytest.raises(DatasetError) as info:
        read_dataset_dir(write_dataset_dir(tmp_path / "d", tables))
    assert info.value.problems[0].startswith("interactions.csv:66002: unknown interaction type 'vue'")
    tables["interactions"][66_000] = ["u2", "p5", "like", "2026-02-01T00:00:00Z"]
    ds = read_dataset_dir(write_dataset_dir(tmp_path / "e", tables))
    assert ds.num_interactions == n
    assert (ds.inter_user[66_000], ds.inter_item[66_000], ds.inter_type[66_000]) == (1, 4, 1)


def test_records_helper_ignores_index_order(tiny_dataset_dir, tmp_path):
    tables = copy.deepcopy(tiny_tables())
    for rows in tables.values():
        rows.reverse()
    reordered = read_dataset_dir(write_dataset_dir(tmp_path / "r", tables))
    assert dataset_records(reordered) == dataset_records(read_dataset_dir(tiny_dataset_dir))
