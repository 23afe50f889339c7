"""Helpers shared by the source tests."""

from __future__ import annotations

from taobao_assets.source.format import (
    HISTORY_FIELDS,
    format_common_line,
    format_entry,
    format_sample_line,
    join_entries,
)
from taobao_assets.source.parser import CommonFeaturesRecord, Record, SampleRecord


def reencode(record: Record) -> bytes:
    """The line a parsed record stands for, written back with the format module (entries in
    file order for samples; profile then history fields for common features)."""
    if isinstance(record, SampleRecord):
        entries = [format_entry(f, i, v) for f, (i, v) in record.features.items()]
        line = format_sample_line(
            record.sample_id,
            record.click,
            record.conversion,
            record.common_feature_index,
            record.num_features,
            join_entries(entries),
        )
    else:
        assert isinstance(record, CommonFeaturesRecord)
        entries = [format_entry(f, i, v) for f, (i, v) in record.features.items()]
        entries += [format_entry(f, i, v) for f in HISTORY_FIELDS for i, v in record.histories[f]]
        line = format_common_line(record.common_feature_index, record.num_features, join_entries(entries))
    return line.encode()
