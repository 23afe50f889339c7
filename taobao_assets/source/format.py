"""The Ali-CCP raw format, written down once (docs/architecture.md, "The source data contract").

Every reader and writer of the raw files (the Python parser, the Spark parser, the synthetic
generator, the replay) takes its separators, columns, field ids and reason codes from here, so a
change to the contract is one edit and the paths cannot drift apart.

A line of either file kind is ``,``-separated columns ending in ``feature_list``: ``num_features``
entries joined by ``\\x01``, each ``field_id \\x02 feature_id \\x03 value``. Field ids are strings
(``"109_14"`` is not a number); feature ids are non-negative integers; values are floats
(``1.0`` for one-hot fields, counts for the 14-day history fields, ``ln(1 + count)`` for the
combination fields). Lines end in ``\\n`` (``\\r\\n`` is accepted; the final line may lack it).

Invariants a record must satisfy (a record breaking one is quarantined with a :class:`Reason`):
``click`` and ``conversion`` are 0 or 1 and ``conversion <= click``; ``num_features`` equals the
number of entries; ids are non-negative integers that fit in 64 bits; values are finite decimal
floats; ``common_feature_index`` is a non-empty word; each field id is known and allowed in its
file kind. A repeated single-valued field is *not* a violation (the published description does not
forbid it and the real files are said to contain it): the first entry is the field's value and
the repeats are kept on the record. The cross-file invariant (every sample's
``common_feature_index`` resolves to a common-features row of the same split) is checked where
both files are at hand, not line by line.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from pathlib import Path

COLUMN_SEP = b","
ENTRY_SEP = b"\x01"
FIELD_SEP = b"\x02"
VALUE_SEP = b"\x03"
LINE_END = b"\n"
_COLUMN_SEP_STR, _ENTRY_SEP_STR, _FIELD_SEP_STR, _VALUE_SEP_STR = (
    sep.decode() for sep in (COLUMN_SEP, ENTRY_SEP, FIELD_SEP, VALUE_SEP)
)

SPLITS = ("train", "test")


class FileKind(enum.StrEnum):
    """The two file kinds; the value is the file-name stem before ``_{split}.csv``."""

    SAMPLE_SKELETON = "sample_skeleton"
    COMMON_FEATURES = "common_features"

    def file_name(self, split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return f"{self.value}_{split}.csv"

    @classmethod
    def from_file_name(cls, name: str) -> FileKind:
        """The kind of a raw file from its name (``sample_skeleton_train.csv`` -> SAMPLE_SKELETON)."""
        for kind in cls:
            if name.startswith(kind.value):
                return kind
        raise ValueError(
            f"cannot tell the file kind of {name!r}: raw file names start with "
            f"{' or '.join(repr(k.value) for k in cls)}; pass the kind explicitly"
        )



def raw_files(folder: Path) -> list[Path]:
    """The four files of a raw Ali-CCP folder (both kinds of both splits), each checked to exist.

    A folder missing one is an incomplete copy or an interrupted generation: reading the rest would
    silently drop a split or leave every sample without its user, so it is refused by name.
    """
    paths = [folder / kind.file_name(split) for kind in FileKind for split in SPLITS]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a raw Ali-CCP folder holds "
                                    f"{', '.join(p.name for p in paths)}")
    return paths

COLUMNS: dict[FileKind, tuple[str, ...]] = {
    FileKind.SAMPLE_SKELETON: (
        "sample_id",
        "click",
        "conversion",
        "common_feature_index",
        "num_features",
        "feature_list",
    ),
    FileKind.COMMON_FEATURES: ("common_feature_index", "num_features", "feature_list"),
}


class FieldGroup(enum.StrEnum):
    USER_ID = "user_id"
    USER_PROFILE = "user_profile"
    USER_HISTORY = "user_history"
    ITEM = "item"
    COMBINATION = "combination"
    CONTEXT = "context"


@dataclass(frozen=True)
class FieldSpec:
    """One field id of the feature lists.

    ``multi_valued`` fields (the 14-day histories) hold a list of ``(feature_id, count)``; the
    others hold one ``(feature_id, value)``.
    """

    field_id: str
    name: str
    group: FieldGroup
    kind: FileKind

    @property
    def multi_valued(self) -> bool:
        return self.group is FieldGroup.USER_HISTORY


def _specs(group: FieldGroup, kind: FileKind, names: dict[str, str]) -> list[FieldSpec]:
    return [FieldSpec(fid, name, group, kind) for fid, name in names.items()]


_USER = FileKind.COMMON_FEATURES
_SAMPLE = FileKind.SAMPLE_SKELETON

FIELDS: dict[str, FieldSpec] = {
    spec.field_id: spec
    for spec in [
        *_specs(FieldGroup.USER_ID, _USER, {"101": "user_id"}),
        *_specs(
            FieldGroup.USER_PROFILE,
            _USER,
            {
                "121": "user_category",
                "122": "user_group",
                "124": "user_gender",
                "125": "user_age",
                "126": "user_consumption_1",
                "127": "user_consumption_2",
                "128": "user_occupation",
                "129": "user_geography",
            },
        ),
        *_specs(
            FieldGroup.USER_HISTORY,
            _USER,
            {
                "109_14": "history_category",
                "110_14": "history_shop",
                "127_14": "history_brand",
                "150_14": "history_intention",
            },
        ),
        *_specs(
            FieldGroup.ITEM,
            _SAMPLE,
            {
                "205": "item_id",
                "206": "item_category",
                "207": "item_shop",
                "210": "item_intention",
                "216": "item_brand",
            },
        ),
        *_specs(
            FieldGroup.COMBINATION,
            _SAMPLE,
            {
                "508": "combo_category",
                "509": "combo_shop",
                "702": "combo_brand",
                "853": "combo_intention",
            },
        ),
        *_specs(FieldGroup.CONTEXT, _SAMPLE, {"301": "position"}),
    ]
}

FIELDS_BY_GROUP: dict[FieldGroup, tuple[str, ...]] = {
    group: tuple(fid for fid, spec in FIELDS.items() if spec.group is group) for group in FieldGroup
}
FIELDS_BY_KIND: dict[FileKind, frozenset[str]] = {
    kind: frozenset(fid for fid, spec in FIELDS.items() if spec.kind is kind) for kind in FileKind
}
HISTORY_FIELDS: tuple[str, ...] = FIELDS_BY_GROUP[FieldGroup.USER_HISTORY]

#: Ids are stored as signed 64-bit integers (Spark/Iceberg/Postgres ``bigint``).
MAX_ID = 2**63 - 1

#: Bytes a ``common_feature_index`` may contain. The real keys are 16 hex digits; the published
#: description does not say so, so any word character (and ``-``) is taken.
KEY_CHARS = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-"

#: Bytes of the value column a strict float may contain; ``float()`` alone would also take
#: ``nan``, ``inf``, blanks and ``1_0``, none of which the format produces.
VALUE_CHARS = b"0123456789.eE+-"


class Reason(enum.StrEnum):
    """Why a line was quarantined; the code is stable (stored in silver ``quarantine``)."""

    WRONG_COLUMN_COUNT = "wrong_column_count"
    NUM_FEATURES_MISMATCH = "num_features_mismatch"
    BAD_SEPARATOR = "bad_separator"
    NON_NUMERIC_ID = "non_numeric_id"
    NEGATIVE_ID = "negative_id"
    BAD_COMMON_FEATURE_INDEX = "bad_common_feature_index"
    BAD_LABEL = "bad_label"
    CONVERSION_WITHOUT_CLICK = "conversion_without_click"
    UNKNOWN_FIELD_ID = "unknown_field_id"
    FIELD_IN_WRONG_FILE = "field_in_wrong_file"
    BAD_VALUE = "bad_value"
    BAD_ENCODING = "bad_encoding"
    TRUNCATED_LAST_LINE = "truncated_last_line"


#: Reasons that mean "the line's structure is broken"; on a final line without a newline they
#: are reported as TRUNCATED_LAST_LINE because an interrupted copy is the likely cause.
STRUCTURAL_REASONS = frozenset(
    {Reason.WRONG_COLUMN_COUNT, Reason.NUM_FEATURES_MISMATCH, Reason.BAD_SEPARATOR}
)

#: Reasons that apply to each file kind (labels exist only in sample_skeleton).
REASONS_BY_KIND: dict[FileKind, tuple[Reason, ...]] = {
    FileKind.SAMPLE_SKELETON: tuple(Reason),
    FileKind.COMMON_FEATURES: tuple(
        r for r in Reason if r not in (Reason.BAD_LABEL, Reason.CONVERSION_WITHOUT_CLICK)
    ),
}


def format_value(value: float) -> str:
    """A value as the raw files write it: shortest repr at 6 decimals (``1.0``, ``0.693147``)."""
    if not math.isfinite(value):
        raise ValueError(f"feature values must be finite, got {value!r}")
    return repr(round(value, 6))


def format_entry(field_id: str, feature_id: int, value: float) -> str:
    return f"{field_id}{_FIELD_SEP_STR}{feature_id}{_VALUE_SEP_STR}{format_value(value)}"


def join_entries(entries: list[str]) -> str:
    """A feature_list column from entries made by :func:`format_entry`."""
    return _ENTRY_SEP_STR.join(entries)


def format_sample_line(
    sample_id: int,
    click: int,
    conversion: int,
    common_feature_index: str,
    num_features: int,
    feature_list: str,
) -> str:
    """One sample_skeleton line, newline included."""
    c = _COLUMN_SEP_STR
    return (
        f"{sample_id}{c}{click}{c}{conversion}{c}{common_feature_index}{c}{num_features}{c}{feature_list}\n"
    )


def format_common_line(common_feature_index: str, num_features: int, feature_list: str) -> str:
    """One common_features line, newline included."""
    c = _COLUMN_SEP_STR
    return f"{common_feature_index}{c}{num_features}{c}{feature_list}\n"
