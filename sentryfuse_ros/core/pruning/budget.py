"""The compute budget: what the word means, the one check of it, and the one level-snapping rule.

Two fractions, two names:

* ``budget`` (the compute budget, ``ModalityHealth.compute_budget``): a fraction in (0, 1] of the live
  set's WHOLE dense forward FLOPs, fixed parts (tokenizers, head) included; 0.5 means half the FLOPs
  of the dense forward for that live set. The health monitor, the perception engine, the sub-network
  cache, ``select_for_budget``, export, evaluation and training's sampled budgets all speak this.
* ``keep_fraction``: a fraction in (0, 1] of the live set's PRUNABLE MACs (KV groups and FFN blocks)
  that ``prune.select_units`` keeps. ``prune.prunable_fraction`` turns a budget into it; the bench's
  pruning ratio is ``1 - keep_fraction``.

A budget is checked once, where it enters the program: a config dataclass (``EngineConfig``,
``BatteryBudgetConfig``, ``TrainConfig``, replay ``Faults``), a command-line flag, or the health
message at the perception node (which falls back to 1.0 instead of raising). The pruning and runtime
code below those trusts it: selection, ``prunable_fraction``, snapping and the cache do not re-check.
"""
import math
from typing import Sequence, Tuple

from sentryfuse_ros.core.config import check

# A budget matches a level within this: budgets travel as float32 (ModalityHealth.compute_budget), whose
# rounding of a value in (0, 1] is below 6e-8 (0.7 arrives as 0.699999988), and levels are >= 0.01 apart.
BUDGET_TOLERANCE = 1e-6

# The budgets with a prebuilt sub-network: the perception node's default `budget_levels` (its
# parameter schema, core/runtime/params.py, reads this), the sub-network cache's and the export's.
BUDGET_LEVELS = (1.0, 0.85, 0.7, 0.5, 0.4)

EXPECTED = 'a compute budget in (0, 1] (a fraction of the live set\'s dense forward FLOPs)'


def is_budget(value) -> bool:
    """True for a real number in (0, 1] (not a bool, not NaN)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
            and 0.0 < float(value) <= 1.0)


def check_budget(value, key: str = 'budget') -> float:
    """``value`` as a float; ConfigError('<key>=<value>: expected a compute budget in (0, 1] ...') if it is not one."""
    check(is_budget(value), key, value, EXPECTED)
    return float(value)


def check_budget_levels(levels: Sequence[float], key: str = 'budget_levels') -> Tuple[float, ...]:
    """The levels as floats, in the given order; ConfigError unless there is at least one and each is a budget."""
    levels = tuple(levels)
    check(len(levels) >= 1 and all(is_budget(b) for b in levels), key, levels, 'one or more budgets in (0, 1]')
    return tuple(float(b) for b in levels)


def snap_to_level(levels: Sequence[float], budget: float) -> float:
    """The level a budget runs at: the highest level <= budget (within BUDGET_TOLERANCE), else the lowest.

    ``levels``: descending, at least one. Total over floats: NaN or anything below the lowest level
    gives the lowest, anything above the highest gives the highest.
    """
    fitting = [lv for lv in levels if lv <= budget + BUDGET_TOLERANCE]
    return fitting[0] if fitting else levels[-1]
