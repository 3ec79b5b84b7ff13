"""Math word-problem tasks: GSM8K data, answer grading, the safe calculator and claim checks.

The TFDS builder lives in :mod:`qstar_jax.tasks.gsm8k_tfds`; it is not
imported here because importing it loads ``tensorflow_datasets``.
"""

from qstar_jax.tasks.calculator import CalculatorError
from qstar_jax.tasks.calculator import CalculatorLimits
from qstar_jax.tasks.calculator import DEFAULT_LIMITS
from qstar_jax.tasks.calculator import evaluate
from qstar_jax.tasks.calculator import normalize_expression
from qstar_jax.tasks.claims import ClaimCheck
from qstar_jax.tasks.claims import StepCheck
from qstar_jax.tasks.claims import check_annotation
from qstar_jax.tasks.claims import check_step
from qstar_jax.tasks.grading import Grade
from qstar_jax.tasks.grading import MODES
from qstar_jax.tasks.grading import extract_answer
from qstar_jax.tasks.grading import grade
from qstar_jax.tasks.grading import normalize_number
from qstar_jax.tasks.gsm8k import Gsm8kLoadResult
from qstar_jax.tasks.gsm8k import Gsm8kProblem
from qstar_jax.tasks.gsm8k import MalformedRowsWarning
from qstar_jax.tasks.gsm8k import SPLITS
from qstar_jax.tasks.gsm8k import load_gsm8k
from qstar_jax.tasks.gsm8k import load_gsm8k_with_stats
from qstar_jax.tasks.gsm8k import parse_answer
from qstar_jax.tasks.gsm8k import parse_jsonl
from qstar_jax.tasks.gsm8k import parse_problem

__all__ = [
    "CalculatorError",
    "CalculatorLimits",
    "ClaimCheck",
    "DEFAULT_LIMITS",
    "Gsm8kLoadResult",
    "Gsm8kProblem",
    "Grade",
    "MODES",
    "MalformedRowsWarning",
    "SPLITS",
    "StepCheck",
    "check_annotation",
    "check_step",
    "evaluate",
    "extract_answer",
    "grade",
    "load_gsm8k",
    "load_gsm8k_with_stats",
    "normalize_expression",
    "normalize_number",
    "parse_answer",
    "parse_jsonl",
    "parse_problem",
]
