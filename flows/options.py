"""Command-line options shared by the ``nasflow`` subcommands and the flows'
own entry points, so the same thing is asked for the same way everywhere
(and ``--help`` of each lists it). Light: no Prefect or torch import."""
from __future__ import annotations

import argparse


def add_set_option(parser: argparse.ArgumentParser, effect: str) -> None:
    """``--set KEY=VALUE`` (repeatable); ``effect`` says what happens to it."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a param ({effect})")


def add_study_options(parser: argparse.ArgumentParser) -> None:
    """The Table-1 study's options (``nasflow ablation``)."""
    parser.add_argument("--repeats", type=int, default=None, metavar="R",
                        help="independent replicates (sets ablation.repeats in the params file)")
    add_set_option(parser, "written to the params file so DVC sees it")
