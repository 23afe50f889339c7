"""Streaming: real-time counters from the Kafka samples topic to the Feast online store, exactly once.

- :mod:`.state`: the Redis state store (counters + applied offsets in one atomic transaction,
  context map, dirty set, lease); :mod:`.counters`: a batch's new counters, worked out by numpy;
- :mod:`.join`: parse (the one parser), join with the user context, aggregate per entity and minute;
- :mod:`.online`: Feast rows of the real-time tables from committed state, and the CTR prior;
- :mod:`.dead_letter`: the dead-letter topic of rejected records;
- :mod:`.applier`: the engine both modes share; :mod:`.run`: exact offset ranges (the sensor's
  runs, ``taobao_assets.jobs.streaming_job``); :mod:`.follow`: the continuous consumer
  (``python -m taobao_assets.streaming follow``).

Choices, each explained where it is made:

- exactly once = the offsets and the counters they produced change in one transaction that
  first checks the stored offsets (:mod:`.state`); the Feast rows are derived from committed state
  through a dirty set, so a crash between the commit and the Feast write is repaired (:mod:`.applier`);
- the state expires: an entity's counters the real-time table's TTL after the last batch that
  touched it (set by the same transaction), a user context the longest such TTL after it was applied;
  the applied offsets never (:mod:`.state`);
- the CTR prior is the global CTR of the latest gold day, the stream's own until there is one,
  or a pinned value (:mod:`.online`);
- freshness is measured from a ``produced_at`` header (wall-clock ms of the send, set by the
  replay) to the return of the Feast write that made the record's counters readable; records of
  other producers without the header are applied but not measured (:mod:`.join`, :mod:`.applier`).
  Kafka's record timestamp cannot serve: it carries the simulated event time.
"""
