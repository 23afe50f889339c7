"""The warnings the platform accepts, each by class and the start of its message, and nothing else.

Dagster 1.13 warns, in every process that builds the definitions (the demo, ``dagster dev``, each
run, the tests), about features the project uses on purpose; said dozens of times at every load,
they buried the warnings that matter. :func:`accept_known_warnings` is called when the
definitions are built (never at import) and silences exactly these; any other warning still shows.
"""

from __future__ import annotations

import re
import warnings

from dagster import BetaWarning, PreviewWarning

ACCEPTED_WARNINGS: list[tuple[type[Warning], str]] = [
    # Partition mappings reach back N days (gold's windows, the user contexts of all days so far);
    # on the first days those days do not exist, which is what this parameter allows.
    (BetaWarning, "Parameter `allow_nonexistent_upstream_partitions` of initializer "
                  "`TimeWindowPartitionMapping.__init__`"),
    # The asset checks are partitioned like their assets: each day's run checks that day.
    (PreviewWarning, "Specifying a partitions_def on an AssetCheckSpec"),
    # Not set by the project: Dagster passes an empty ``owners`` to itself when it binds the
    # resources to a sensor (SensorDefinition.with_attributes).
    (BetaWarning, "Parameter `owners` of initializer `SensorDefinition.__init__`"),
    # The analytics reports run one run per backfill (BackfillPolicy.single_run); the serving job
    # mixes them with per-day assets, so Dagster runs it one day per run, as the demo does anyway.
    (BetaWarning, "Parameter `backfill_policy`"),
    (UserWarning, "Asset job daily_serving"),
]


def accept_known_warnings() -> None:
    """Silence :data:`ACCEPTED_WARNINGS`, and undo Feast's global switch of deprecation warnings.

    Importing feast runs ``warnings.simplefilter("once", DeprecationWarning)`` for the whole
    process (feast/feature_view.py), so other libraries' notices reached the terminal (Dagster's
    about its own use of ``InitResourceContext.dagster_run``, protobuf's about
    ``FieldDescriptor.label``). Python's default is restored: deprecations show for ``__main__``.
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category, message in ACCEPTED_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
