"""The ``elukit`` entry point: a Click group whose verbs live in one module each."""

from __future__ import annotations

from typing import Any

import click

from elukit import __version__
from elukit.cli.audit_cmd import audit_command
from elukit.cli.chaos_cmd import chaos_command
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

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        ctx.meta["elukit.arguments"] = list(args)  # for the hint below: the verb's own tokens
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as error:
            tokens = ctx.meta.get("elukit.arguments", [])
            numbers = [t for t in tokens if t.startswith(error.option_name) and _looks_like_a_number(t)]
            if numbers:
                error.message += (f" {numbers[0]} reads as an option: put -- before negative numbers, "
                                  f"e.g. elukit {ctx.invoked_subcommand} ... -- {numbers[0]}")
            raise
        except (ValueError, TypeError, ImportError) as error:
            click.echo(f"elukit: error: {error}", err=True)
            ctx.exit(2)
        except OSError as error:  # an unwritable or vanished output path: one line, not a traceback
            where = f": {error.filename!r}" if error.filename else ""
            click.echo(f"elukit: error: {error.strerror or error}{where}", err=True)
            ctx.exit(2)


def _looks_like_a_number(option: str) -> bool:
    try:
        float(option)
    except ValueError:
        return False
    return True


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
main.add_command(chaos_command)
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
