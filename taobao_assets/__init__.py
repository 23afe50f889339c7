"""Dagster assets of the taobao feature platform: Ali-CCP logs to a Feast feature store.

Dagster 1.13 warns, in every process that builds these definitions (the demo, ``dagster dev``,
the tests), about the features below. The project uses them on purpose, so each one is accepted
here by its warning class and the start of its message, and only it: any other warning still shows.
"""

import re
import warnings

# Where Dagster defines its warning classes (``dagster`` re-exports them). Importing ``dagster``
# itself here would make every import of the package, e.g. the stack manager's settings, pay for
# all of Dagster.
from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

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
    # "Asset job daily_serving materializes assets with varying BackfillPolicies ...": the serving
    # job mixes the analytics reports (one run per backfill) with per-day serving assets, so
    # Dagster runs it one day per run, which is what the demo does anyway.
    (UserWarning, "Asset job daily_serving"),
]

for category, message in ACCEPTED_WARNINGS:
    warnings.filterwarnings("ignore", message=re.escape(message), category=category)
