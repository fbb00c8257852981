"""Shared by the executor tests: a study's stored rows in an order that does not depend on how they
were written (local, Ray, a retried task)."""

import sqlite3


def rows(path):
    """Every metric row (without timings), ordered by its unique key: study, configuration label,
    seed, epoch, metric, layer."""
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT c.study_id, c.label, r.seed, m.epoch, m.name, m.layer, m.value FROM metric m "
            "JOIN run r ON r.id = m.run_id JOIN configuration c ON c.id = r.configuration_id "
            "ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
