"""The ``sere`` command: one group, one subcommand per verb, over the library's own functions."""

from __future__ import annotations

import logging

import click

from sere_core import __version__
from sere_core.cli.embed import embed, encoders
from sere_core.cli.method import benchmark, fit, predict


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sere")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """SERE Studio: few-shot, cross-lingual speech emotion recognition."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


main.add_command(encoders)
main.add_command(embed)

for command in (fit, predict, benchmark):
    main.add_command(command)
