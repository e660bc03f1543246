"""Evaluators (genotype -> metrics), registered by name in EVALUATORS; the
protocol is in nas_core.evaluators.base."""
from nas_core.evaluators.base import (EVALUATORS, EvalData, Evaluator, EvaluatorError, EvaluatorName,
                                      create_evaluator, evaluator_config)

# One import per evaluator module (importing registers it).
# -- evaluator modules --
from nas_core.evaluators import train  # noqa: F401,E402
from nas_core.evaluators import supernet  # noqa: F401,E402
from nas_core.evaluators import zero_cost  # noqa: F401,E402

__all__ = ["EVALUATORS", "EvalData", "Evaluator", "EvaluatorError", "EvaluatorName", "create_evaluator",
           "evaluator_config"]
