"""The leaderboard: storage (keys, strict reading, locked atomic upserts), rendering (rich
tables, csv / json / markdown) and the environment columns of a row."""

from c2f_attacks.leaderboard.environment import ENVIRONMENT_COLUMNS, environment_columns
from c2f_attacks.leaderboard.render import FORMATS, HEADERS, TABLE_COLUMNS, render_table
from c2f_attacks.leaderboard.storage import (
    COLUMNS,
    KEY,
    REQUIRED,
    SCHEMA,
    LeaderboardWriteError,
    canonical_key,
    check_leaderboard,
    config_settings,
    config_string,
    read_leaderboard,
    row_id,
    target_policy,
    upsert_rows,
)

__all__ = [
    "COLUMNS",
    "ENVIRONMENT_COLUMNS",
    "FORMATS",
    "HEADERS",
    "KEY",
    "REQUIRED",
    "SCHEMA",
    "TABLE_COLUMNS",
    "LeaderboardWriteError",
    "canonical_key",
    "check_leaderboard",
    "config_settings",
    "config_string",
    "environment_columns",
    "read_leaderboard",
    "render_table",
    "row_id",
    "target_policy",
    "upsert_rows",
]
