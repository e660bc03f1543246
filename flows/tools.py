"""The command-line tools installed with nasflow (``dvc``, ``nasflow``,
``torchrun``) live beside the Python interpreter that runs it. Child
processes get that directory first on PATH, so the tools are found even when
the virtualenv is not activated (``.venv/bin/nasflow pipeline`` from a plain
shell, a cron job, a Prefect worker started by path)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping


def tools_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) with the interpreter's script
    directory first on PATH."""
    env = dict(os.environ if environ is None else environ)
    scripts = str(Path(sys.executable).parent)
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join([scripts, *[p for p in parts if p != scripts]])
    return env
