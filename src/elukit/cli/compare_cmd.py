"""``elukit compare`` and ``elukit report``: train activations on real data and report."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import click


class _PositiveFinite(click.ParamType):
    """A float that is finite and > 0 (click.FloatRange lets inf and nan through)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not (math.isfinite(number) and number > 0):
            self.fail(f"{number} is not finite and > 0.", param, ctx)
        return number


POSITIVE = click.IntRange(min=1)


def _check_arguments(dataset: str | None, data_file: str | None, activations: str | None, model: str | None,
                     batch_norm: bool | None, out: Path, resume: bool, executor: str, ray_address: str | None,
                     workers: int | None) -> None:
    """Every check that needs neither torch nor Ray, before either is imported (2.5-15 s): a bad
    flag is one line at once, not after the imports (issue 22). The numeric ranges are the
    options' click types; `run_study` checks everything again for callers of the library."""
    from elukit._files import check_writable_directory
    from elukit._registry import parse
    from elukit.cli._common import warn_not_self_normalising
    from elukit.experiments.data import DATASETS
    from elukit.experiments.executors import check_reachable, make_executor

    if dataset is not None and data_file is not None:
        raise ValueError("give either --dataset or --data, not both")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"--dataset: unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")
    if data_file is not None and not Path(data_file).is_file():
        raise ValueError(f"--data {data_file!r}: no such file")
    if activations is not None:
        names = [a.strip() for a in activations.split(",") if a.strip()]
        if not names:
            raise ValueError(f"--activations {activations!r} names no activation; give e.g. --activations relu,elu")
        specs = [parse(name) for name in names]  # one line naming an unknown activation or parameter
        labels = [spec.label() for spec in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"--activations lists an activation twice: {activations}")
        warn_not_self_normalising(specs)
    if model == "cnn" and batch_norm:
        raise ValueError("--batch-norm is implemented for --model mlp only")
    if resume and not (out / "results.db").is_file():
        raise ValueError(f"--resume: no results database at {str(out / 'results.db')!r}; "
                         "run without --resume to start a study")
    if executor == "local":
        make_executor("local", ray_address, workers)  # --ray-address or --workers without ray: one line
    elif ray_address not in (None, "auto"):
        check_reachable(ray_address)
    check_writable_directory(out, "--out")


class _ProgressBar:
    """One status line on stderr: configuration, epoch bar, test accuracy, ETA."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last = 0.0
        self.interactive = sys.stderr.isatty()

    def __call__(self, progress) -> None:
        if self.quiet:
            return
        if not self.interactive:  # a log file: one line per finished configuration, no \r redraws
            if progress.epoch == progress.epochs:
                click.echo(f"[{progress.configuration + 1}/{progress.configurations}] {progress.label}: "
                           f"{progress.epochs} epochs, loss {progress.train_loss:.3f}, test acc "
                           f"{100 * progress.test_accuracy:.1f}%, {progress.elapsed:.0f} s", err=True)
            return
        now = time.monotonic()
        if progress.epoch < progress.epochs and now - self.last < 0.2:
            return
        self.last = now
        width = 20
        filled = int(width * progress.epoch / progress.epochs)
        eta = time.strftime("%M:%S", time.gmtime(max(progress.eta, 0)))
        line = (f"\r[{progress.configuration + 1}/{progress.configurations}] {progress.label:<18} "
                f"[{'#' * filled}{'.' * (width - filled)}] epoch {progress.epoch}/{progress.epochs} "
                f"loss {progress.train_loss:.3f} test acc {100 * progress.test_accuracy:.1f}% ETA {eta}")
        click.echo(line, err=True, nl=progress.epoch == progress.epochs)


@click.command(
    "compare",
    epilog=(
        "Examples:\n\n"
        "  elukit compare                                   # MNIST-1D, relu/leaky_relu/elu/selu, 8 seeds\n\n"
        "  elukit compare --dataset digits --activations relu,elu:alpha=0.5,celu:alpha=2 --seeds 10\n\n"
        "  elukit compare --preset clevert2016 --out clevert\n\n"
        "  elukit compare --data mydata.npz --model mlp --width 256 --depth 4 --batch-norm\n\n"
        "  elukit compare --resume                          # after Ctrl-C: continue where it stopped\n\n"
        "  elukit compare --executor ray --ray-address auto # each configuration a task on a Ray cluster"
    ),
)
@click.option("--dataset", default=None, help="Built-in dataset: mnist1d (default), digits, breast_cancer, wine.")
@click.option("--data", "data_file", type=click.Path(dir_okay=False), default=None,
              help="Your own .npz with x_train, y_train, x_test, y_test (instead of --dataset).")
@click.option("--activations", default=None, help="Comma-separated, e.g. relu,leaky_relu,elu:alpha=0.5,selu.")
@click.option("--seeds", type=POSITIVE, default=None, help="Seeds per activation, trained as one batched ensemble [8].")
@click.option("--epochs", type=POSITIVE, default=None, help="Training epochs [60].")
@click.option("--model", type=click.Choice(["mlp", "cnn"]), default=None, help="Network [mlp].")
@click.option("--width", type=POSITIVE, default=None, help="Hidden units (MLP) or channels (CNN) [100].")
@click.option("--depth", type=POSITIVE, default=None, help="Hidden layers (MLP) or conv layers (CNN) [2].")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=None, help="Optimizer [adam].")
@click.option("--lr", type=_PositiveFinite(), default=None, help="Learning rate [0.01].")
@click.option("--batch-size", type=POSITIVE, default=None, help="Minibatch size [100].")
@click.option("--init", type=click.Choice(["gain", "torch", "he", "eoc"]), default=None,
              help="gain: elukit.theory's derived gain per activation; torch: PyTorch's default; he: sqrt(2); "
                   "eoc: the edge of chaos at bias variance 0 (elukit.theory.edge_of_chaos) [gain].")
@click.option("--batch-norm/--no-batch-norm", default=None, help="Batch normalisation before each activation [off].")
@click.option("--preset", type=click.Choice(["default", "clevert2016"]), default="default", show_default=True,
              help="A named configuration; explicit flags override it.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("elukit-results"),
              show_default=True, help="Output folder: results.db and report/.")
@click.option("--resume", is_flag=True, help="Continue the latest study in OUT/results.db (same arguments).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads [MLP: 2 where 2 cores are available and one is idle, else 1; CNN: 1]. The "
                   "MLP's batched matmuls use a second core with the same results (on a busy machine a second "
                   "thread is far slower); the CNN's grouped convolutions change their last bits with the "
                   "thread count.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where configurations train: this process, or Ray tasks (pip install 'elukit[ray]'); "
                   "the results are the same rows.")
@click.option("--ray-address", default=None,
              help="With --executor ray: auto, host:port or ray://host:port of a cluster [start a local Ray].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --executor ray: configurations training at once [the cluster's CPUs / threads].")
@click.option("--compile", "compile_kernels", is_flag=True,
              help="Fuse the activation kernels with torch.compile (bit-identical; needs a C++ compiler; "
                   "a few seconds of compilation per activation).")
def compare_command(dataset, data_file, activations, seeds, epochs, model, width, depth, optimizer, lr, batch_size,
                    init, batch_norm, preset, out, resume, threads, executor, ray_address, workers, quiet,
                    compile_kernels) -> None:
    """Train the same network with each activation on real data, several seeds, with diagnostics,
    store every epoch in OUT/results.db and write a report to OUT/report/."""
    from elukit.cli._common import require
    from elukit.experiments.data import required_modules

    _check_arguments(dataset, data_file, activations, model, batch_norm, out, resume, executor, ray_address, workers)
    require("compare", ["torch", "matplotlib", *required_modules(dataset or "mnist1d", data_file)], "experiments")
    from elukit._files import exclusive_folder
    from elukit.cli._common import invoked_command
    from elukit.experiments.report import build_report
    from elukit.experiments.train import PRESETS, StudyConfig, default_threads, run_study

    settings = dict(PRESETS[preset])
    given = {"dataset": dataset, "data_file": str(Path(data_file).resolve()) if data_file else None,
             "activations": tuple(a.strip() for a in activations.split(",") if a.strip()) if activations else None,
             "seeds": seeds, "epochs": epochs, "model": model, "width": width, "depth": depth, "optimizer": optimizer,
             "lr": lr, "batch_size": batch_size, "init": init, "batch_norm": batch_norm}
    settings.update({k: v for k, v in given.items() if v is not None})
    config = StudyConfig(**settings)
    if compile_kernels:
        from elukit.torch.functional import use_compiled_kernels

        use_compiled_kernels(True)
    started = time.monotonic()
    command = invoked_command()
    with exclusive_folder(out, "--out", command):
        try:
            store, study_id = run_study(config, out, resume=resume, progress=_ProgressBar(quiet),
                                        threads=threads if threads is not None else default_threads(config.model),
                                        executor=executor, ray_address=ray_address, workers=workers,
                                        log=lambda line: click.echo(line, err=True), command=command)
        except KeyboardInterrupt:
            if (out / "results.db").is_file():
                click.echo(f"\ninterrupted: finished epochs are in {out / 'results.db'}; "
                           f"run the same command with --resume to continue", err=True)
            else:
                click.echo("\ninterrupted before any epoch was stored", err=True)
            sys.exit(130)
        store.close()
        paths = build_report(out / "results.db", out / "report", study_id)
    if "earlier" in paths:
        click.echo(f"the report of an earlier study that was in {out / 'report'} is kept in {paths['earlier']}")
    click.echo(f"study {study_id} done in {time.monotonic() - started:.0f} s; report: {paths['html']} "
               f"(and {paths['markdown'].name})")


@click.command(
    "report",
    epilog="Examples:\n\n  elukit report elukit-results/results.db -o report/\n\n"
           "  elukit report results.db --study 2 --target-loss 0.5 -o report2/",
)
@click.argument("database", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for report.html, report.md and figures.")
@click.option("--study", type=int, default=None, help="Study id (default: the latest).")
@click.option("--target-loss", type=float, default=None,
              help="Training loss for 'epochs to target' (default: the highest final mean loss).")
def report_command(database: Path, output: Path, study: int | None, target_loss: float | None) -> None:
    """Write the HTML and Markdown report of a study from a results database."""
    from elukit.cli._common import require

    require("report", ["matplotlib"], "experiments")
    from elukit.experiments.report import build_report

    paths = build_report(database, output, study, target_loss)
    if "earlier" in paths:
        click.echo(f"the report of another study that was in {output} is kept in {paths['earlier']}")
    click.echo(f"wrote {paths['html']} and {paths['markdown']}")


__all__ = ["compare_command", "report_command"]
