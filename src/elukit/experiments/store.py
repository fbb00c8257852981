"""The results store: one SQLite database (OUT/results.db) of studies, configurations, runs and
per-epoch metrics, plus the latest checkpoint of each configuration for `--resume`.

Every epoch of a configuration is one transaction: its metric rows for all seeds and the
checkpoint after that epoch are written together or not at all, so an interrupted study resumes
from the last completed epoch without losing or duplicating a row (the primary key of `metric`
makes a duplicate an error, never a silent second row). The database runs in WAL mode with a
busy timeout, so concurrent writers (two studies sharing an OUT) wait for each other instead of
corrupting it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    created REAL NOT NULL,
    config TEXT NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS configuration (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES study(id),
    label TEXT NOT NULL,
    config TEXT NOT NULL,
    finished REAL,
    UNIQUE (study_id, label)
);
CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY,
    configuration_id INTEGER NOT NULL REFERENCES configuration(id),
    seed INTEGER NOT NULL,
    UNIQUE (configuration_id, seed)
);
CREATE TABLE IF NOT EXISTS metric (
    run_id INTEGER NOT NULL REFERENCES run(id),
    epoch INTEGER NOT NULL,
    name TEXT NOT NULL,
    layer INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, epoch, name, layer)
);
CREATE TABLE IF NOT EXISTS provenance (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES study(id),
    created REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    configuration_id INTEGER PRIMARY KEY REFERENCES configuration(id),
    epoch INTEGER NOT NULL,
    seconds REAL NOT NULL,
    state BLOB NOT NULL
);
"""

NETWORK = -1
"""`metric.layer` of whole-network metrics (losses, accuracies); activation layers count from 0."""


def config_key(config: dict[str, Any]) -> str:
    """A stable hash of a study configuration (sorted JSON)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


TABLES = ("study", "configuration", "run", "metric", "checkpoint")


class Store:
    """A connection to a results database (created if missing; with ``create=False`` it must
    already be one: a file that is not, SQLite or not, is a ValueError naming it, and is left
    untouched)."""

    def __init__(self, path: str | os.PathLike[str], create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ValueError(f"no results database at {str(self.path)!r}")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        where = "file:" + urllib.parse.quote(str(self.path.resolve())) + ("" if create else "?mode=rw")
        self.connection = sqlite3.connect(where, uri=True, timeout=60.0, isolation_level=None)
        try:
            tables = {row[0] for row in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not create and not set(TABLES) <= tables:
                raise ValueError(f"{str(self.path)!r} is an SQLite database but not an elukit results database "
                                 f"(it lacks the tables {', '.join(t for t in TABLES if t not in tables)})")
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA foreign_keys=ON")
            self.connection.execute("PRAGMA busy_timeout=60000")
            with self.transaction() as db:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    db.execute(statement)
        except sqlite3.DatabaseError as error:
            self.connection.close()
            raise ValueError(f"{str(self.path)!r} cannot be read as an elukit results database (SQLite says: {error})") from None
        except BaseException:
            self.connection.close()
            raise

    def transaction(self):
        """``with store.transaction():`` -- BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""
        store = self

        class _Transaction:
            def __enter__(self_inner):
                store.connection.execute("BEGIN IMMEDIATE")
                return store.connection

            def __exit__(self_inner, kind, value, traceback):
                store.connection.execute("COMMIT" if kind is None else "ROLLBACK")
                return False

        return _Transaction()

    def close(self) -> None:
        self.connection.close()

    # -- studies --------------------------------------------------------------------------------
    def create_study(self, config: dict[str, Any]) -> int:
        with self.transaction() as db:
            cursor = db.execute("INSERT INTO study (key, created, config) VALUES (?, ?, ?)",
                                (config_key(config), time.time(), json.dumps(config, sort_keys=True)))
            return int(cursor.lastrowid)

    def latest_study(self) -> tuple[int, dict[str, Any]] | None:
        row = self.connection.execute("SELECT id, config FROM study ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), json.loads(row[1]))

    def study_config(self, study_id: int) -> dict[str, Any]:
        row = self.connection.execute("SELECT config FROM study WHERE id = ?", (study_id,)).fetchone()
        if row is None:
            raise ValueError(f"no study {study_id} in {self.path}")
        return json.loads(row[0])

    def finish_study(self, study_id: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE study SET finished = ? WHERE id = ?", (time.time(), study_id))

    def add_provenance(self, study_id: int, record: dict[str, Any]) -> None:
        """How a session on this study was run (command, version, date, CPU, threads): one row per
        start and per resume."""
        with self.transaction() as db:
            db.execute("INSERT INTO provenance (study_id, created, record) VALUES (?, ?, ?)",
                       (study_id, time.time(), json.dumps(record, sort_keys=True)))

    def provenance(self, study_id: int) -> list[dict[str, Any]]:
        rows = self.connection.execute("SELECT record FROM provenance WHERE study_id = ? ORDER BY id",
                                       (study_id,)).fetchall()
        return [json.loads(row[0]) for row in rows]

    # -- configurations and runs ---------------------------------------------------------------
    def configuration(self, study_id: int, label: str, config: dict[str, Any], seeds: Sequence[int]
                      ) -> tuple[int, dict[int, int]]:
        """The configuration's id and {seed: run id}, created on first use."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO configuration (study_id, label, config) VALUES (?, ?, ?)",
                       (study_id, label, json.dumps(config, sort_keys=True)))
            (configuration_id,) = db.execute("SELECT id FROM configuration WHERE study_id = ? AND label = ?",
                                             (study_id, label)).fetchone()
            for seed in seeds:
                db.execute("INSERT OR IGNORE INTO run (configuration_id, seed) VALUES (?, ?)", (configuration_id, int(seed)))
            runs = dict(db.execute("SELECT seed, id FROM run WHERE configuration_id = ?", (configuration_id,)).fetchall())
        return int(configuration_id), {int(k): int(v) for k, v in runs.items()}

    def finish_configuration(self, configuration_id: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE configuration SET finished = ? WHERE id = ?", (time.time(), configuration_id))

    def configuration_finished(self, configuration_id: int) -> bool:
        row = self.connection.execute("SELECT finished FROM configuration WHERE id = ?", (configuration_id,)).fetchone()
        return row is not None and row[0] is not None

    # -- epochs -----------------------------------------------------------------------------------
    def write_epoch(self, configuration_id: int, epoch: int, rows: Iterable[tuple[int, str, int, float]],
                    state: bytes | None, seconds: float) -> None:
        """Metric rows (run id, name, layer, value) of one epoch and the checkpoint after it, atomically."""
        with self.transaction() as db:
            db.executemany("INSERT INTO metric (run_id, epoch, name, layer, value) VALUES (?, ?, ?, ?, ?)",
                           [(run, epoch, name, layer, value) for run, name, layer, value in rows])
            if state is not None:
                db.execute("INSERT OR REPLACE INTO checkpoint (configuration_id, epoch, seconds, state) VALUES (?, ?, ?, ?)",
                           (configuration_id, epoch, seconds, state))

    def checkpoint(self, configuration_id: int) -> tuple[int, float, bytes] | None:
        """(epoch, training seconds so far, state) of the last completed epoch, or None."""
        row = self.connection.execute("SELECT epoch, seconds, state FROM checkpoint WHERE configuration_id = ?",
                                      (configuration_id,)).fetchone()
        return None if row is None else (int(row[0]), float(row[1]), bytes(row[2]))

    def metric_series(self, runs: Sequence[int], name: str, layer: int = NETWORK) -> list[tuple[int, int, float]]:
        """(run id, epoch, value) of one metric of `runs` at `layer` (the whole network by default)."""
        if not runs:
            return []
        return self.connection.execute(
            f"SELECT run_id, epoch, value FROM metric WHERE name = ? AND layer = ? "
            f"AND run_id IN ({','.join('?' * len(runs))})", (name, layer, *runs)).fetchall()

    def last_epoch(self, configuration_id: int) -> int:
        row = self.connection.execute(
            "SELECT MAX(epoch) FROM metric JOIN run ON run.id = metric.run_id WHERE run.configuration_id = ?",
            (configuration_id,)).fetchone()
        return -1 if row[0] is None else int(row[0])

    # -- reading ------------------------------------------------------------------------------------
    def metrics(self, study_id: int) -> list[tuple[str, int, int, str, int, float]]:
        """(configuration label, seed, epoch, name, layer, value) rows of a study."""
        return self.connection.execute(
            """SELECT configuration.label, run.seed, metric.epoch, metric.name, metric.layer, metric.value
               FROM metric JOIN run ON run.id = metric.run_id
               JOIN configuration ON configuration.id = run.configuration_id
               WHERE configuration.study_id = ? ORDER BY configuration.id, run.seed, metric.epoch""",
            (study_id,)).fetchall()

    def configurations(self, study_id: int) -> list[tuple[str, dict[str, Any], float | None]]:
        rows = self.connection.execute(
            "SELECT label, config, finished FROM configuration WHERE study_id = ? ORDER BY id", (study_id,)).fetchall()
        return [(label, json.loads(config), finished) for label, config, finished in rows]

    def training_seconds(self, study_id: int) -> dict[str, float]:
        rows = self.connection.execute(
            """SELECT configuration.label, checkpoint.seconds FROM checkpoint
               JOIN configuration ON configuration.id = checkpoint.configuration_id WHERE configuration.study_id = ?""",
            (study_id,)).fetchall()
        return dict(rows)
