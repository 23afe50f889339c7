"""Feature formulas, written once for the batch (Spark) and the streaming (Python) paths.

The formulas are plain arithmetic, so the same function computes a Spark ``Column`` when given
columns and a ``float`` when given numbers: gold calls them on Spark columns, the streaming run on
its Redis counters, and the two cannot drift apart.

Smoothing. A rate over few trials is noise (1 click in 2 impressions is not a 50 % CTR), so rates
are shrunk towards the global rate of the same window with the weight of ``strength`` pseudo
trials, the posterior mean of a Beta prior centred on the global rate:
``(successes + prior * strength) / (trials + strength)``.
"""

from __future__ import annotations

from typing import Any

#: Trailing windows, in days, of the counters in the gold tables.
WINDOWS_DAYS = (1, 3, 7)
#: Pseudo impressions behind the CTR prior (about 4 expected clicks at the Ali-CCP CTR).
CTR_PRIOR_STRENGTH = 100.0
#: Pseudo clicks behind the CVR prior (conversions are rare: ~0.5 % of clicks).
CVR_PRIOR_STRENGTH = 200.0


def smoothed_rate(successes: Any, trials: Any, prior: Any, strength: float) -> Any:
    """Posterior-mean rate: ``successes / trials`` shrunk towards ``prior`` by ``strength`` trials."""
    return (successes + prior * strength) / (trials + strength)


def smoothed_ctr(clicks: Any, impressions: Any, prior_ctr: Any) -> Any:
    return smoothed_rate(clicks, impressions, prior_ctr, CTR_PRIOR_STRENGTH)


def smoothed_cvr(conversions: Any, clicks: Any, prior_cvr: Any) -> Any:
    return smoothed_rate(conversions, clicks, prior_cvr, CVR_PRIOR_STRENGTH)


def global_rate(successes: Any, trials: Any) -> Any:
    """The prior of a window: the plain rate over every entity, 0 when there were no trials."""
    return successes / trials if trials else 0.0
