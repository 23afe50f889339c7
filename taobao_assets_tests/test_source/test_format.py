from __future__ import annotations

import pytest

from taobao_assets.source.format import (
    COLUMNS,
    FIELDS,
    FIELDS_BY_GROUP,
    FIELDS_BY_KIND,
    HISTORY_FIELDS,
    REASONS_BY_KIND,
    FieldGroup,
    FileKind,
    Reason,
    format_common_line,
    format_entry,
    format_sample_line,
    format_value,
    join_entries,
)


def test_every_field_belongs_to_exactly_one_group_and_file_kind():
    grouped = [fid for group in FieldGroup for fid in FIELDS_BY_GROUP[group]]
    assert sorted(grouped) == sorted(FIELDS)
    assert FIELDS_BY_KIND[FileKind.SAMPLE_SKELETON].isdisjoint(FIELDS_BY_KIND[FileKind.COMMON_FEATURES])
    assert FIELDS_BY_KIND[FileKind.SAMPLE_SKELETON] | FIELDS_BY_KIND[FileKind.COMMON_FEATURES] == set(FIELDS)


def test_field_table_matches_the_design_document():
    assert FIELDS_BY_GROUP[FieldGroup.USER_ID] == ("101",)
    assert FIELDS_BY_GROUP[FieldGroup.USER_PROFILE] == (
        "121",
        "122",
        "124",
        "125",
        "126",
        "127",
        "128",
        "129",
    )
    assert HISTORY_FIELDS == ("109_14", "110_14", "127_14", "150_14")
    assert FIELDS_BY_GROUP[FieldGroup.ITEM] == ("205", "206", "207", "210", "216")
    assert FIELDS_BY_GROUP[FieldGroup.COMBINATION] == ("508", "509", "702", "853")
    assert FIELDS_BY_GROUP[FieldGroup.CONTEXT] == ("301",)
    assert all(FIELDS[f].multi_valued for f in HISTORY_FIELDS)
    assert not any(spec.multi_valued for f, spec in FIELDS.items() if f not in HISTORY_FIELDS)
    assert COLUMNS[FileKind.SAMPLE_SKELETON][-1] == COLUMNS[FileKind.COMMON_FEATURES][-1] == "feature_list"


def test_label_reasons_apply_only_to_sample_files():
    assert Reason.BAD_LABEL in REASONS_BY_KIND[FileKind.SAMPLE_SKELETON]
    assert Reason.CONVERSION_WITHOUT_CLICK not in REASONS_BY_KIND[FileKind.COMMON_FEATURES]


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1.0"), (14.0, "14.0"), (0.6931471805599453, "0.693147"), (2.302585093, "2.302585")],
)
def test_values_are_written_like_the_real_files(value, text):
    assert format_value(value) == text


def test_non_finite_values_cannot_be_written():
    with pytest.raises(ValueError, match="finite"):
        format_value(float("nan"))


def test_lines_are_written_with_the_raw_separators():
    entries = [format_entry("205", 12, 1.0), format_entry("508", 7, 0.6931471805599453)]
    assert format_sample_line(3, 1, 0, "ab12", 2, join_entries(entries)) == (
        "3,1,0,ab12,2,205\x0212\x031.0\x01508\x027\x030.693147\n"
    )
    assert format_common_line("ab12", 1, format_entry("101", 9, 1.0)) == "ab12,1,101\x029\x031.0\n"


def test_file_names_round_trip_to_their_kind():
    for kind in FileKind:
        assert FileKind.from_file_name(kind.file_name("train")) is kind
    with pytest.raises(ValueError, match="cannot tell the file kind"):
        FileKind.from_file_name("users.csv")
    with pytest.raises(ValueError, match="split"):
        FileKind.SAMPLE_SKELETON.file_name("valid")
