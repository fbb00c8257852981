"""elukit.experiments: data, batched ensembles, training with diagnostics, SQLite store, statistics, report."""
