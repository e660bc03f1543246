"""The one mapping from failures to the exit codes of ``nasflow`` and of the
torchrun entry (flows.distributed): bad params or data 2, a NaN/inf loss 3,
an unreachable tracking server 75 (sysexits EX_TEMPFAIL: the pipeline
retries only these)."""
from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_TEMPFAIL = 75


def exit_code(exc: BaseException) -> int | None:
    """The exit code for ``exc``; None for a failure that is not a known
    kind (a bug: let it raise with its traceback)."""
    from nas_core.config import ParamsError
    from nas_core.data import DataError
    from nas_core.registry import UnknownNameError
    from nas_core.train.loop import NonFiniteLossError
    from tasks.tracking import TrackingUnavailable

    for kinds, code in (((ParamsError, DataError, UnknownNameError), EXIT_BAD_INPUT),
                        ((NonFiniteLossError,), EXIT_NONFINITE), ((TrackingUnavailable,), EXIT_TEMPFAIL)):
        if isinstance(exc, kinds):
            return code
    return None
