"""The ``elukit`` entry point: a Click group whose verbs live in one module each."""

from __future__ import annotations

from typing import Any

import click

from elukit import __version__
from elukit.cli.audit_cmd import audit_command
from elukit.cli.claims_cmd import claims_command
from elukit.cli.compare_cmd import compare_command, report_command
from elukit.cli.eval_cmd import eval_command
from elukit.cli.gain_cmd import gain_command
from elukit.cli.list_cmd import list_command
from elukit.cli.plot_cmd import plot_command
from elukit.cli.propagate_cmd import propagate_command
from elukit.cli.stats_cmd import stats_command


class _Group(click.Group):
    """Turns the library's ValueError/TypeError/ImportError into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ValueError, TypeError, ImportError) as error:
            click.echo(f"elukit: error: {error}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Run 'elukit VERB --help' for a verb's options and examples.")
@click.version_option(__version__, prog_name="elukit")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Exact ELU-family activations, their theory, and experiments that check the claims."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


main.add_command(compare_command)
main.add_command(report_command)
main.add_command(list_command)
main.add_command(eval_command)
main.add_command(plot_command)
main.add_command(stats_command)
main.add_command(audit_command)
main.add_command(gain_command)
main.add_command(propagate_command)
main.add_command(claims_command)

def _keep_example_lines(epilog: str | None) -> str | None:
    """Click rewraps epilog paragraphs; a leading \\b keeps each example on its own line."""
    if not epilog:
        return epilog
    lines = [line for line in epilog.splitlines() if line.strip()]
    return "\b\n" + "\n".join(lines)


for _command in main.commands.values():
    _command.epilog = _keep_example_lines(_command.epilog)

if __name__ == "__main__":  # pragma: no cover
    main()
