"""``elukit claims``: measure every claim made for ELU and SELU and write the ledger."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import click


@click.command(
    "claims",
    epilog=(
        "Examples:\n\n"
        "  elukit claims --list                              # the claims, their sources and rules\n\n"
        "  elukit claims                                     # quick profile: every claim, 8 seeds, 3 datasets\n\n"
        "  elukit claims --only zero-centred,smooth-at-zero  # some claims (the controls always run)\n\n"
        "  elukit claims --profile full --out big            # more seeds, datasets, widths (hours)\n\n"
        "  elukit claims --resume                            # after Ctrl-C: continue where it stopped"
    ),
)
@click.option("--list", "list_only", is_flag=True, help="List the claims (id, measurement, sources, statement) and exit.")
@click.option("--only", default=None, help="Comma-separated claim ids (the two controls always run).")
@click.option("--profile", default="quick", show_default=True,
              help="quick: every claim, 8 seeds, 3 datasets (its measured time: docs/claims.md); full: 16 seeds, "
                   "4 datasets, wider grids (several CPU-hours); tiny: a smoke test of the machinery, not evidence.")
@click.option("--seeds", type=int, default=None, help="Seeds per configuration (>= 2) instead of the profile's.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("elukit-results"),
              show_default=True, help="Folder of results.db (shared with elukit compare) and claims/.")
@click.option("--resume", is_flag=True, help="Continue the latest ledger in OUT/results.db (same profile and seeds).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes training in parallel, one torch thread each [the cores this process may use]. "
                   "The results are the same bits for any number.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the arms train: worker processes here, or Ray tasks (pip install 'elukit[ray]'); "
                   "the same bits either way.")
@click.option("--ray-address", default=None,
              help="With --executor ray: auto, host:port or ray://host:port of a cluster [start a local Ray].")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def claims_command(list_only: bool, only: str | None, profile: str, seeds: int | None, out: Path, resume: bool,
                   workers: int | None, executor: str, ray_address: str | None, quiet: bool) -> None:
    """Decide every claim made for ELU and SELU from evidence: effect, 95% interval, verdict
    (supported / refuted / mixed / inconclusive) and the command that reproduces it. Writes
    OUT/claims/ledger.json, ledger.md and ledger.html and prints the table."""
    from elukit.claims import CLAIMS, check_profile, run_ledger, select, table_rows, write_ledger
    from elukit._files import exclusive_folder
    from elukit.cli._common import invoked_command
    from elukit.claims._ledger import TABLE_HEADERS, banners, protocol_line
    from elukit.experiments.executors import usable_cores

    if list_only:
        for claim in CLAIMS:
            kind = "control" if claim.is_control else claim.measurement
            click.echo(f"{claim.id:<28} {kind:<11} {claim.statement}")
        return
    chosen_profile = check_profile(profile)
    if seeds is not None:
        if seeds < 2:
            raise ValueError(f"--seeds must be >= 2 (paired tests need two pairs), got {seeds}")
        chosen_profile = dataclasses.replace(chosen_profile, seeds=seeds)
    claims = select(only)
    if not quiet:
        click.echo(f"profile {chosen_profile.name}: {chosen_profile.compute}", err=True)
    started = time.monotonic()
    progress = None if quiet else (lambda message: click.echo(f"  {message}", err=True))
    command = invoked_command()
    with exclusive_folder(out, "--out", command):
        try:
            ledger = run_ledger(claims, chosen_profile, out, resume=resume, seeds_given=seeds, progress=progress,
                                threads=1, workers=workers if workers is not None else usable_cores(),
                                executor=executor, ray_address=ray_address, command=command)
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted: finished work is in {out / 'results.db'}; "
                       f"run the same command with --resume to continue", err=True)
            sys.exit(130)
        paths = write_ledger(ledger, out / "claims")
    rows = table_rows(ledger)
    click.echo(protocol_line(ledger))
    for banner in banners(ledger):
        click.echo(f"*** {banner} ***")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(TABLE_HEADERS[:-1])]
    for cells in [TABLE_HEADERS, *rows]:  # the command, last, unpadded
        click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1])
    click.echo(f"ledger {ledger['ledger_id']} in {time.monotonic() - started:.0f} s: {paths['json']}, "
               f"{paths['markdown'].name}, {paths['html'].name}")


__all__ = ["claims_command"]
