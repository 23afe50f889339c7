"""Synthetic Ali-CCP files: the raw format exactly, a realistic shape and a known signal.

``python -m taobao_assets.source.generate --rows N --days D --seed S --out DIR`` writes
``sample_skeleton_{train,test}.csv`` and ``common_features_{train,test}.csv`` as the real data set
lays them out, plus ``generator_truth.json`` (the true parameters and what was realised) and, with
``--malformed-fraction``, ``malformed.json`` (every injected bad line with its file, line number
and the reason the parser must give). Same arguments, same bytes.

The world behind the files:
- users and items have Zipf-like popularity; items belong to a category (Zipf), a shop, a brand
  and an intention node; each user has a profile and a few preferred categories;
- a session is one ``common_feature_index`` (one user context): a user, a 14-day history drawn
  from the user's interactions (partly in the preferred categories; the four history lists make
  up most of the ~500 entries of a common row), and tens of contiguous impressions;
- ``logit P(click) = base + user effect + item effect + category effect + affinity (item in a
  preferred category) + position effect``; ``P(conversion | click)`` has its own base plus the
  item effect. Bases are calibrated so CTR is about ``ctr`` and CVR about ``cvr``; the AUC of the
  true propensities (what an oracle model scores) is written to the truth file;
- combination fields 508/509/702/853 carry ``ln(1 + count)`` of the item's category / shop / brand
  / intention node in the session's history, present only when that count is positive;
- sessions run in time order; train takes the first ``1 - test_fraction`` of the impressions,
  test the rest; each split's common rows are written in a shuffled order (as in the real files,
  where a replay must send the common features ahead of the samples using them).

Sample ids run 1..N across train then test, so they stay unique when both splits share a topic.
Malformed lines are *inserted* copies of a neighbouring good line, broken one way each, so the
clean data and its truth are the same with or without them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from taobao_assets.source.event_time import EventTimeConfig, Timeline
from taobao_assets.source.format import (
    COLUMN_SEP,
    ENTRY_SEP,
    FIELD_SEP,
    FIELDS_BY_GROUP,
    HISTORY_FIELDS,
    REASONS_BY_KIND,
    SPLITS,
    VALUE_SEP,
    FieldGroup,
    FileKind,
    Reason,
    format_common_line,
    format_sample_line,
    format_value,
    join_entries,
)

TRUTH_FILE = "generator_truth.json"
#: Written last into a generated folder: its presence says the generation finished.
COMPLETE_FILE = "generator_complete.json"
MALFORMED_FILE = "malformed.json"

_COL, _ENT, _FLD, _VAL = (sep.decode() for sep in (COLUMN_SEP, ENTRY_SEP, FIELD_SEP, VALUE_SEP))
_ONE = format_value(1.0)
_ITEM_FIELDS = FIELDS_BY_GROUP[FieldGroup.ITEM]  # 205 item, 206 category, 207 shop, 210 intention, 216 brand
_COMBO_FIELDS = FIELDS_BY_GROUP[FieldGroup.COMBINATION]  # crosses with category, shop, brand, intention
_PROFILE_FIELDS = FIELDS_BY_GROUP[FieldGroup.USER_PROFILE]
#: Cardinalities of the profile fields in the real data (121 category ... 129 geography).
_PROFILE_CARDINALITY = (98, 14, 3, 8, 4, 4, 3, 5)
_POSITIONS = 4
_PREFERRED_CATEGORIES = 3
#: Samples per generation batch: large enough to amortise numpy calls, small enough to stay lean.
_BATCH_SAMPLES = 50_000
#: Entries of the per-item and per-user text caches before they are emptied (bounds memory at full scale).
_CACHE_LIMIT = 1 << 19


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. ``rows`` counts good sample lines of both splits together."""

    rows: int = 100_000
    seed: int = 0
    out: Path = Path("data/aliccp-synthetic")
    test_fraction: float = 0.1
    event_time: EventTimeConfig = field(default_factory=EventTimeConfig)
    malformed_fraction: float = 0.0
    ctr: float = 0.04
    cvr: float = 0.005
    samples_per_common: float = 40.0
    #: Mean 14-day interactions behind a user context; ~720 gives ~500 entries per common row.
    history_interactions: int = 720
    progress: bool = True

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"rows must be >= 1, got {self.rows}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("test_fraction", "malformed_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class GeneratedDataset:
    """Where the files are and the truth written beside them."""

    folder: Path
    files: dict[str, Path]
    truth_path: Path
    malformed_path: Path | None
    truth: dict[str, Any]

    def timeline(self) -> Timeline:
        """The event-time mapping of these files (line counts include malformed lines)."""
        config, files = self.truth["config"], self.truth["files"]
        return Timeline(
            EventTimeConfig(date.fromisoformat(config["start_date"]), config["days"]),
            *(files[FileKind.SAMPLE_SKELETON.file_name(split)]["lines"] for split in SPLITS),
        )


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """An independent stream per (seed, purpose, index); Philox keys make them cheap to create."""
    return np.random.Generator(np.random.Philox(key=(seed << 64) | (stream << 48) | index))


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Popularity weights ~ rank^-exponent, ranks shuffled so ids do not sort by popularity."""
    return (1.0 / np.arange(1, n + 1) ** exponent)[rng.permutation(n)]


def _feature_ids(rng: np.random.Generator, n: int, low: int = 1, high: int = 5_000_000) -> np.ndarray:
    """Distinct random feature ids for ``n`` values of one field (the real ids look hashed)."""
    return rng.choice(max(high - low, 2 * n), size=n, replace=False) + low


def _entry(field_id: str, feature_id: int | str, value: str = _ONE) -> str:
    """One entry with its value already formatted (the generator caches value strings); a str
    feature id lets the malformed-line injector write broken ids."""
    return f"{field_id}{_FLD}{feature_id}{_VAL}{value}"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _solve_base(target: float, rate: Callable[[float], float]) -> float:
    """The base logit at which ``rate(base)`` (increasing in base) equals ``target``."""
    low, high = -20.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if rate(mid) < target else (low, mid)
    return (low + high) / 2


def _search(cumulative: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """``searchsorted(cumulative, needles, "right")`` clipped to valid indices.

    Random needles into an array larger than the CPU caches miss on every probe; searching them
    in sorted order is several times faster there (4 M items: 1.0 s -> 0.14 s per million).
    """
    if len(cumulative) < 1 << 16:
        index = np.searchsorted(cumulative, needles, side="right")
    else:
        order = np.argsort(needles)
        index = np.empty(len(needles), dtype=np.int64)
        index[order] = np.searchsorted(cumulative, needles[order], side="right")
    return np.minimum(index, len(cumulative) - 1)


class _Sampler:
    """Draws indices proportionally to fixed weights in O(log n) per draw."""

    def __init__(self, weights: np.ndarray) -> None:
        self.cumulative = np.cumsum(weights)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return _search(self.cumulative, rng.random(size) * self.cumulative[-1])


@dataclass
class _Histories:
    """The 14-day lists of a batch of sessions: per history field, rows sorted by (session, entity)."""

    sessions: list[np.ndarray]
    entities: list[np.ndarray]
    counts: list[np.ndarray]

    def count_of(self, field: int, sessions: np.ndarray, entities: np.ndarray, vocabulary: int) -> np.ndarray:
        """The history count of (session, entity) pairs of one field, 0 where absent."""
        keys = self.sessions[field] * vocabulary + self.entities[field]
        wanted = sessions * vocabulary + entities
        index = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        found = keys[index] == wanted if len(keys) else np.zeros(len(wanted), dtype=bool)
        return np.where(found, self.counts[field][index], 0)


class _World:
    """Users, items and the click model; every array is indexed by entity number."""

    def __init__(self, config: GeneratorConfig) -> None:
        rng = _rng(config.seed, 0)
        rows = config.rows
        # Ratios of the real data set (84 M samples: 400 K users, 4.3 M items, ~7 K categories), with
        # floors so that even a small data set has ~500-entry history rows and real Zipf tails.
        self.n_users = max(20, rows // 200)
        self.n_items = max(5_000, rows // 20)
        self.n_categories = int(np.clip(self.n_items // 600, 60, 7000))
        self.n_shops = max(400, self.n_items // 16)
        self.n_brands = max(250, self.n_items // 40)
        self.n_intentions = max(150, self.n_items // 100)
        self.vocabularies = (self.n_categories, self.n_shops, self.n_brands, self.n_intentions)

        self.item_weights = _zipf_weights(rng, self.n_items, 1.0)
        self.item_sampler = _Sampler(self.item_weights)
        self.item_attributes = (
            _Sampler(_zipf_weights(rng, self.n_categories, 1.0)).draw(rng, self.n_items),
            _Sampler(_zipf_weights(rng, self.n_shops, 0.8)).draw(rng, self.n_items),
            _Sampler(_zipf_weights(rng, self.n_brands, 0.9)).draw(rng, self.n_items),
            _Sampler(_zipf_weights(rng, self.n_intentions, 0.9)).draw(rng, self.n_items),
        )
        self.item_category = self.item_attributes[0]
        # Items sorted by category with cumulative popularity, to draw an item within a category.
        self._by_category = np.argsort(self.item_category, kind="stable")
        self._by_category_cumulative = np.cumsum(self.item_weights[self._by_category])
        category_mass = np.bincount(
            self.item_category, weights=self.item_weights, minlength=self.n_categories
        )
        self._category_high = np.cumsum(category_mass)
        self._category_low = self._category_high - category_mass

        self.user_sampler = _Sampler(_zipf_weights(rng, self.n_users, 0.6))
        self.user_preferred = _Sampler(category_mass).draw(rng, self.n_users * _PREFERRED_CATEGORIES)
        self.user_preferred = self.user_preferred.reshape(self.n_users, _PREFERRED_CATEGORIES)
        self.user_profile = np.stack(
            [
                _Sampler(_zipf_weights(rng, card, 0.7)).draw(rng, self.n_users)
                for card in _PROFILE_CARDINALITY
            ],
            axis=1,
        )

        self.user_effect_sd, self.item_effect_sd, self.category_effect_sd = 0.5, 0.5, 0.3
        self.affinity_effect = 0.8
        self.position_effects = np.array([0.3, 0.1, -0.1, -0.3])
        self.position_probabilities = np.array([0.4, 0.3, 0.2, 0.1])
        self.conversion_item_coefficient = 0.5
        self.preferred_share = 0.35
        self.history_preferred_share = 0.4
        self.history_interactions = config.history_interactions
        self.user_effect = rng.normal(0, self.user_effect_sd, self.n_users)
        self.item_effect = rng.normal(0, self.item_effect_sd, self.n_items)
        self.category_effect = rng.normal(0, self.category_effect_sd, self.n_categories)

        self.ids = {
            "101": _feature_ids(rng, self.n_users),
            **{
                f: _feature_ids(rng, card, 1, 1000)
                for f, card in zip(_PROFILE_FIELDS, _PROFILE_CARDINALITY, strict=True)
            },
            **{
                f: _feature_ids(rng, n)
                for f, n in zip(_ITEM_FIELDS, (self.n_items, *self._item_field_sizes()), strict=True)
            },
            "301": _feature_ids(rng, _POSITIONS),
            **{f: _feature_ids(rng, n) for f, n in zip(HISTORY_FIELDS, self.vocabularies, strict=True)},
            **{f: _feature_ids(rng, n) for f, n in zip(_COMBO_FIELDS, self.vocabularies, strict=True)},
        }
        self.base_logit, self.conversion_base_logit = self._calibrate(config)
        self._item_texts: dict[int, str] = {}
        self._profile_texts: dict[int, str] = {}
        self.position_texts = [_entry("301", fid) for fid in self.ids["301"].tolist()]
        self._history_prefixes: dict[str, list[str]] = {}

    def _item_field_sizes(self) -> tuple[int, int, int, int]:
        """Vocabularies of 206, 207, 210, 216 (the item fields' order: category, shop, intention, brand)."""
        return self.n_categories, self.n_shops, self.n_intentions, self.n_brands

    def items_in(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
        low, high = self._category_low[categories], self._category_high[categories]
        return self._by_category[
            _search(self._by_category_cumulative, low + rng.random(len(categories)) * (high - low))
        ]

    def impressions(
        self, rng: np.random.Generator, users: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Items, positions, affinity flags and click logits (without base) shown to ``users``."""
        n = len(users)
        preferred = rng.random(n) < self.preferred_share
        chosen = self.user_preferred[users, rng.integers(0, _PREFERRED_CATEGORIES, n)]
        items = np.where(preferred, self.items_in(rng, chosen), self.item_sampler.draw(rng, n))
        positions = rng.choice(_POSITIONS, size=n, p=self.position_probabilities)
        affinity = (self.user_preferred[users] == self.item_category[items][:, None]).any(axis=1)
        logits = (
            self.user_effect[users]
            + self.item_effect[items]
            + self.category_effect[self.item_category[items]]
            + self.affinity_effect * affinity
            + self.position_effects[positions]
        )
        return items, positions, affinity, logits

    def conversion_probability(self, items: np.ndarray) -> np.ndarray:
        return _sigmoid(
            self.conversion_base_logit + self.conversion_item_coefficient * self.item_effect[items]
        )

    def _calibrate(self, config: GeneratorConfig) -> tuple[float, float]:
        rng = _rng(config.seed, 6)
        items, _, _, logits = self.impressions(rng, self.user_sampler.draw(rng, 200_000))
        base = _solve_base(config.ctr, lambda b: float(_sigmoid(b + logits).mean()))
        clicks = _sigmoid(base + logits)
        item_part = self.conversion_item_coefficient * self.item_effect[items]
        conversion_base = _solve_base(
            config.cvr, lambda b: float((clicks * _sigmoid(b + item_part)).sum() / clicks.sum())
        )
        return base, conversion_base

    def histories(self, rng: np.random.Generator, users: np.ndarray) -> _Histories:
        """14-day lists of sessions of ``users``: counts of interactions per category, shop, brand
        and intention node, drawn partly from the user's preferred categories."""
        sizes = np.maximum(
            20, (self.history_interactions * rng.lognormal(0.0, 0.4, len(users))).astype(np.int64)
        )
        session = np.repeat(np.arange(len(users)), sizes)
        user = users[session]
        preferred = rng.random(len(session)) < self.history_preferred_share
        chosen = self.user_preferred[user, rng.integers(0, _PREFERRED_CATEGORIES, len(session))]
        items = np.where(preferred, self.items_in(rng, chosen), self.item_sampler.draw(rng, len(session)))
        repeats = rng.geometric(0.6, len(session))
        lists = _Histories([], [], [])
        for attribute, vocabulary in zip(self.item_attributes, self.vocabularies, strict=True):
            keys = session * vocabulary + attribute[items]
            # Keys arrive sorted by session; a stable sort exploits those runs (np.unique does not).
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            keys = keys[starts]
            lists.sessions.append(keys // vocabulary)
            lists.entities.append(keys % vocabulary)
            lists.counts.append(np.add.reduceat(repeats[order], starts))
        return lists

    def item_text(self, item: int) -> str:
        """The five item entries (205, 206, 207, 210, 216) of an item, joined; made once per item."""
        text = self._item_texts.get(item)
        if text is None:
            category, shop, brand, intention = (a[item] for a in self.item_attributes)
            entities = (item, category, shop, intention, brand)
            text = join_entries(
                [_entry(f, self.ids[f][e]) for f, e in zip(_ITEM_FIELDS, entities, strict=True)]
            )
            if len(self._item_texts) >= _CACHE_LIMIT:
                self._item_texts.clear()
            self._item_texts[item] = text
        return text

    def profile_text(self, user: int) -> str:
        """The user id and profile entries (101, 121..129) of a user, joined; made once per user."""
        text = self._profile_texts.get(user)
        if text is None:
            values = self.user_profile[user].tolist()
            text = join_entries(
                [_entry("101", self.ids["101"][user])]
                + [_entry(f, self.ids[f][v]) for f, v in zip(_PROFILE_FIELDS, values, strict=True)]
            )
            if len(self._profile_texts) >= _CACHE_LIMIT:
                self._profile_texts.clear()
            self._profile_texts[user] = text
        return text

    def history_prefixes(self, field_id: str) -> list[str]:
        """``<entry sep>field<field sep>feature id<value sep>`` per entity of a history field."""
        prefixes = self._history_prefixes.get(field_id)
        if prefixes is None:
            prefixes = [f"{_ENT}{field_id}{_FLD}{f}{_VAL}" for f in self.ids[field_id].tolist()]
            self._history_prefixes[field_id] = prefixes
        return prefixes


@dataclass
class _Sessions:
    """Sessions (common_feature_index values) in time order, with their users and split."""

    sizes: np.ndarray
    users: np.ndarray
    keys: list[str]
    train_sessions: int

    @classmethod
    def draw(cls, config: GeneratorConfig, world: _World) -> _Sessions:
        rng = _rng(config.seed, 1)
        sigma = 0.8
        mu = math.log(config.samples_per_common) - sigma**2 / 2
        batches: list[np.ndarray] = []
        drawn = 0
        while drawn < config.rows:
            batches.append(
                np.maximum(1, np.round(rng.lognormal(mu, sigma, 1 + config.rows // 10))).astype(np.int64)
            )
            drawn += int(batches[-1].sum())
        sizes = np.concatenate(batches)
        count = int(np.searchsorted(np.cumsum(sizes), config.rows)) + 1
        sizes = sizes[:count]
        sizes[-1] -= int(sizes.sum()) - config.rows
        users = world.user_sampler.draw(rng, count)
        distinct = np.unique(rng.integers(0, 2**63 - 1, size=count + 16, dtype=np.int64))
        keys = [f"{k:016x}" for k in rng.permutation(distinct)[:count].tolist()]
        target_train = config.rows - round(config.rows * config.test_fraction)
        train = int(np.searchsorted(np.cumsum(sizes), target_train, side="left")) + 1
        if config.test_fraction > 0 and count > 1:
            train = min(train, count - 1)
        return cls(sizes, users, keys, min(train, count))

    def split_range(self, split: str) -> range:
        return (
            range(0, self.train_sessions) if split == "train" else range(self.train_sessions, len(self.sizes))
        )

    def samples_in(self, split: str) -> int:
        selected = self.split_range(split)
        return int(self.sizes[selected.start : selected.stop].sum())

    def batches(self, split: str) -> list[range]:
        """Consecutive session ranges of about _BATCH_SAMPLES samples each."""
        selected = self.split_range(split)
        ends = np.cumsum(self.sizes[selected.start : selected.stop])
        cuts = np.searchsorted(
            ends, np.arange(_BATCH_SAMPLES, int(ends[-1]) if len(ends) else 0, _BATCH_SAMPLES)
        )
        bounds = [selected.start, *sorted({selected.start + int(c) + 1 for c in cuts}), selected.stop]
        return [range(a, b) for a, b in pairwise(bounds) if b > a]


def _malformed_variants(kind: FileKind) -> list[Reason]:
    return [r for r in REASONS_BY_KIND[kind] if r is not Reason.TRUNCATED_LAST_LINE]


def _break_line(line: str, reason: Reason, kind: FileKind) -> bytes:
    """A copy of a good ``line`` broken so that the parser must answer exactly ``reason``."""
    columns = line[:-1].split(_COL)
    first_entry = columns[-1].split(_ENT, 1)[0]
    field_id, rest = first_entry.split(_FLD)
    feature_id, value = rest.split(_VAL)
    replaced: dict[int, str] = {}
    if reason is Reason.WRONG_COLUMN_COUNT:
        return line.replace(_COL, ";", 1).encode()
    if reason is Reason.BAD_ENCODING:
        return line.encode().replace(COLUMN_SEP, b"\xff\xfe" + COLUMN_SEP, 1)
    if reason is Reason.NUM_FEATURES_MISMATCH:
        replaced[-2] = str(int(columns[-2]) + 1)
    elif reason is Reason.BAD_COMMON_FEATURE_INDEX:
        replaced[3 if kind is FileKind.SAMPLE_SKELETON else 0] = ""
    elif reason is Reason.BAD_LABEL:
        replaced[1] = "2"
    elif reason is Reason.CONVERSION_WITHOUT_CLICK:
        replaced[1], replaced[2] = "0", "1"
    else:
        entry = {
            Reason.BAD_SEPARATOR: f"{field_id}{_FLD}{feature_id}{_FLD}{value}",
            Reason.NON_NUMERIC_ID: _entry(field_id, f"{feature_id}x", value),
            Reason.NEGATIVE_ID: _entry(field_id, f"-{feature_id}", value),
            Reason.UNKNOWN_FIELD_ID: _entry("999", feature_id, value),
            Reason.FIELD_IN_WRONG_FILE: _entry(
                "101" if kind is FileKind.SAMPLE_SKELETON else "205", feature_id, value
            ),
            Reason.BAD_VALUE: _entry(field_id, feature_id, "one"),
        }[reason]
        replaced[-1] = entry + columns[-1][len(first_entry) :]
    for index, text in replaced.items():
        columns[index] = text
    return (_COL.join(columns) + "\n").encode()


def _truncate(line: str) -> bytes:
    """``line`` cut just after its third field separator, inside an entry, without newline."""
    cut = -1
    for _ in range(3):
        cut = line.index(_FLD, cut + 1)
    return line[: cut + 1].encode()


class _FileWriter:
    """Writes good lines and the planned malformed insertions; remembers where each bad line went."""

    def __init__(self, path: Path, kind: FileKind, insert_after: np.ndarray) -> None:
        self.path = path
        self.kind = kind
        self.file: IO[bytes] = path.open("wb")
        self.lines = 0
        self.good = 0
        self.malformed: list[dict[str, Any]] = []
        self._buffer: list[str] = []
        self._buffered = 0
        self._insert_after = insert_after.tolist()
        self._next_insert = 0
        self._variants = _malformed_variants(kind)
        self._last = ""
        self._hash = hashlib.sha256()

    def write(self, line: str) -> None:
        self._buffer.append(line)
        self._buffered += len(line)
        self.lines += 1
        self._last = line
        while (
            self._next_insert < len(self._insert_after) and self._insert_after[self._next_insert] == self.good
        ):
            reason = self._variants[self._next_insert % len(self._variants)]
            self._write_bad(_break_line(line, reason, self.kind), reason)
            self._next_insert += 1
        self.good += 1
        if self._buffered > 1 << 22:
            self._flush()

    def _write_bad(self, raw: bytes, reason: Reason) -> None:
        self._flush()
        self._emit(raw)
        self.lines += 1
        self.malformed.append(
            {
                "file": self.path.name,
                "line_number": self.lines,
                "reason": reason.value,
                "kind": self.kind.value,
            }
        )

    def _emit(self, data: bytes) -> None:
        self.file.write(data)
        self._hash.update(data)

    def _flush(self) -> None:
        if self._buffer:
            self._emit("".join(self._buffer).encode())
            self._buffer.clear()
            self._buffered = 0

    def close(self, truncate_last: bool) -> dict[str, Any]:
        if truncate_last and self._last:
            self._write_bad(_truncate(self._last), Reason.TRUNCATED_LAST_LINE)
        self._flush()
        self.file.close()
        return {
            "lines": self.lines,
            "good_lines": self.good,
            "bytes": self.path.stat().st_size,
            "sha256": self._hash.hexdigest(),
        }


def _insertion_plan(config: GeneratorConfig, kind: FileKind, split: str, good_lines: int) -> np.ndarray:
    """Sorted good-line indices after which a malformed line goes (each variant at least once)."""
    if config.malformed_fraction <= 0 or good_lines == 0:
        return np.zeros(0, dtype=np.int64)
    rng = _rng(config.seed, 5, list(FileKind).index(kind) * 2 + SPLITS.index(split))
    count = max(round(config.malformed_fraction * good_lines), len(_malformed_variants(kind)))
    return np.sort(rng.integers(0, good_lines, size=count))


class _AucBins:
    """AUC of a score streamed over many batches: label counts per fine logit bin (ties within a bin)."""

    def __init__(self, bins: int = 20_000, low: float = -15.0, high: float = 5.0) -> None:
        self.low, self.high, self.bins = low, high, bins
        self.positives = np.zeros(bins)
        self.negatives = np.zeros(bins)

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        index = ((logits - self.low) / (self.high - self.low) * self.bins).astype(np.int64)
        index = np.clip(index, 0, self.bins - 1)
        self.positives += np.bincount(index, weights=labels, minlength=self.bins)
        self.negatives += np.bincount(index, weights=1 - labels, minlength=self.bins)

    def auc(self) -> float | None:
        pos, neg = self.positives.sum(), self.negatives.sum()
        if pos == 0 or neg == 0:
            return None
        below = np.cumsum(self.negatives) - self.negatives
        return float((self.positives * (below + self.negatives / 2)).sum() / (pos * neg))


class _Tally:
    """Realised counts per (split, day), CTR with and without affinity, and the oracle AUC."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        days = timeline.config.days
        self.per_day = {s: np.zeros((3, days), dtype=np.int64) for s in SPLITS}
        self.affinity = np.zeros((2, 2), dtype=np.int64)  # [has affinity] -> [impressions, clicks]
        self.oracle = _AucBins()
        self.oracle_by_day = [_AucBins() for _ in range(days)]
        self.common_rows = dict.fromkeys(SPLITS, 0)
        self.common_entries = dict.fromkeys(SPLITS, 0)

    def add(
        self,
        split: str,
        line_numbers: np.ndarray,
        clicks: np.ndarray,
        conversions: np.ndarray,
        affinity: np.ndarray,
        logits: np.ndarray,
    ) -> None:
        ordinals = line_numbers - 1 + (self.timeline.train_lines if split == "test" else 0)
        days = ordinals * self.timeline.config.days // self.timeline.total
        size = self.timeline.config.days
        table = self.per_day[split]
        table[0] += np.bincount(days, minlength=size)
        table[1] += np.bincount(days, weights=clicks, minlength=size).astype(np.int64)
        table[2] += np.bincount(days, weights=conversions, minlength=size).astype(np.int64)
        for flag in (0, 1):
            mask = affinity == flag
            self.affinity[flag] += (int(mask.sum()), int(clicks[mask].sum()))
        self.oracle.add(logits, clicks.astype(np.float64))
        for day in np.unique(days).tolist():
            on_day = days == day
            self.oracle_by_day[day].add(logits[on_day], clicks[on_day].astype(np.float64))


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else round(float(numerator) / float(denominator), 6)


class _SplitWriter:
    """Writes one split: samples in time order, common rows staged then copied in shuffled order."""

    def __init__(
        self,
        config: GeneratorConfig,
        world: _World,
        sessions: _Sessions,
        split: str,
        plans: dict[FileKind, np.ndarray],
        tally: _Tally,
        progress: tqdm,
    ) -> None:
        self.config, self.world, self.sessions, self.split = config, world, sessions, split
        self.plans, self.tally, self.progress = plans, tally, progress
        out = Path(config.out)
        self.samples = _FileWriter(
            out / FileKind.SAMPLE_SKELETON.file_name(split),
            FileKind.SAMPLE_SKELETON,
            plans[FileKind.SAMPLE_SKELETON],
        )
        self.staging_path = out / f".{FileKind.COMMON_FEATURES.file_name(split)}.staging"
        # Where each session's common row sits in the staging file, in time order.
        self.staged_offsets = array("q")
        self.staged_lengths = array("q")
        self.good_samples = 0
        self.malformed: list[dict[str, Any]] = []

    def write(self, first_sample_id: int) -> dict[str, dict[str, Any]]:
        rng = _rng(self.config.seed, 2, SPLITS.index(self.split))
        sample_id = first_sample_id
        with self.staging_path.open("wb") as staging:
            for batch in self.sessions.batches(self.split):
                histories = self.world.histories(rng, self.sessions.users[batch.start : batch.stop])
                self._stage_common(batch, histories, staging)
                sample_id = self._write_samples(rng, batch, histories, sample_id)
        stats = {self.samples.path.name: self.samples.close(self._truncate(self.samples))}
        common = self._copy_common_shuffled()
        stats[common.path.name] = common.close(self._truncate(common))
        self.staging_path.unlink()
        self.malformed = self.samples.malformed + common.malformed
        return stats

    def _truncate(self, writer: _FileWriter) -> bool:
        return self.config.malformed_fraction > 0 and writer.good > 0

    def _stage_common(self, batch: range, histories: _Histories, staging: IO[bytes]) -> None:
        world = self.world
        # Entry texts of the whole batch per field (each with its leading entry separator), then
        # one slice per session: per-entry work is a single string concatenation.
        texts, bounds = [], []
        for index, field_id in enumerate(HISTORY_FIELDS):
            prefixes = world.history_prefixes(field_id)
            counts = histories.counts[index]
            # Counts are integers, so format_value writes them as the integer and ".0".
            values = [format_value(float(c)) for c in range(int(counts.max()) + 1)]
            texts.append(
                [
                    prefixes[e] + values[c]
                    for e, c in zip(histories.entities[index].tolist(), counts.tolist(), strict=True)
                ]
            )
            bounds.append(np.searchsorted(histories.sessions[index], np.arange(len(batch) + 1)).tolist())
        chunk: list[str] = []
        offset = staging.tell()
        for local, session in enumerate(batch):
            parts = [world.profile_text(int(self.sessions.users[session]))]
            count = 1 + len(_PROFILE_FIELDS)
            for field_texts, field_bounds in zip(texts, bounds, strict=True):
                start, end = field_bounds[local], field_bounds[local + 1]
                parts += field_texts[start:end]
                count += end - start
            line = format_common_line(self.sessions.keys[session], count, "".join(parts))
            chunk.append(line)
            self.staged_offsets.append(offset)
            self.staged_lengths.append(len(line))  # ASCII: characters are bytes
            offset += len(line)
            self.tally.common_entries[self.split] += count
        staging.write("".join(chunk).encode())
        self.tally.common_rows[self.split] += len(batch)

    def _copy_common_shuffled(self) -> _FileWriter:
        writer = _FileWriter(
            Path(self.config.out) / FileKind.COMMON_FEATURES.file_name(self.split),
            FileKind.COMMON_FEATURES,
            self.plans[FileKind.COMMON_FEATURES],
        )
        order = _rng(self.config.seed, 4, SPLITS.index(self.split)).permutation(len(self.staged_offsets))
        descriptor = os.open(self.staging_path, os.O_RDONLY)
        try:
            for index in order.tolist():
                offset, length = self.staged_offsets[index], self.staged_lengths[index]
                writer.write(os.pread(descriptor, length, offset).decode())
                self.progress.update(1)
        finally:
            os.close(descriptor)
        return writer

    def _write_samples(
        self, rng: np.random.Generator, batch: range, histories: _Histories, sample_id: int
    ) -> int:
        world, sessions = self.world, self.sessions
        sizes = sessions.sizes[batch.start : batch.stop]
        local = np.repeat(np.arange(len(batch)), sizes)
        users = sessions.users[batch.start : batch.stop][local]
        items, positions, affinity, logits = world.impressions(rng, users)
        logits = logits + world.base_logit
        clicks = (rng.random(len(users)) < _sigmoid(logits)).astype(np.int64)
        conversions = clicks * (rng.random(len(users)) < world.conversion_probability(items))
        # Combination entries (with their leading separator, "" when the history count is 0),
        # one list per field for the whole batch.
        combos, present = [], np.zeros(len(users), dtype=np.int64)
        for index, field_id in enumerate(_COMBO_FIELDS):
            entities = world.item_attributes[index][items]
            counts = histories.count_of(index, local, entities, world.vocabularies[index])
            present += counts > 0
            values = [format_value(math.log1p(c)) for c in range(int(counts.max()) + 1)]
            combos.append(
                [
                    f"{_ENT}{field_id}{_FLD}{f}{_VAL}{values[c]}" if c else ""
                    for f, c in zip(world.ids[field_id][entities].tolist(), counts.tolist(), strict=True)
                ]
            )
        num_features = (present + len(_ITEM_FIELDS) + 1).tolist()
        keys = [sessions.keys[s] for s in batch]
        positions_text = world.position_texts
        for i, (item, position, click, conversion, session, c1, c2, c3, c4) in enumerate(
            zip(
                items.tolist(),
                positions.tolist(),
                clicks.tolist(),
                conversions.tolist(),
                local.tolist(),
                *combos,
                strict=True,
            )
        ):
            feature_list = f"{world.item_text(item)}{_ENT}{positions_text[position]}{c1}{c2}{c3}{c4}"
            self.samples.write(
                format_sample_line(
                    sample_id + i, click, conversion, keys[session], num_features[i], feature_list
                )
            )
        good = np.arange(self.good_samples, self.good_samples + len(users))
        # Line number of a good line: its index + 1 + the malformed lines inserted before it.
        line_numbers = good + 1 + np.searchsorted(self.plans[FileKind.SAMPLE_SKELETON], good, side="left")
        self.tally.add(self.split, line_numbers, clicks, conversions, affinity, logits)
        self.good_samples += len(users)
        self.progress.update(len(users))
        return sample_id + len(users)


def generate(config: GeneratorConfig) -> GeneratedDataset:
    """Write the four raw files, the truth and (with malformed lines) their list; see the module doc.

    Everything is written in a hidden folder beside ``config.out``, ends with :data:`COMPLETE_FILE`,
    and only then takes the place of ``config.out``: a generation that is interrupted leaves no
    folder that looks like a data set (the demo would replay its first lines as if they were all).
    """
    out = Path(config.out)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted generation left
    partial.mkdir(parents=True)
    dataset = _generate(replace(config, out=partial))
    (partial / COMPLETE_FILE).write_text(json.dumps({"rows": config.rows, "seed": config.seed}) + "\n")
    _take_place_of(partial, out)
    return GeneratedDataset(out, {name: out / path.name for name, path in dataset.files.items()},
                            out / TRUTH_FILE, out / MALFORMED_FILE if dataset.malformed_path else None, dataset.truth)


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a whole generated data set (not one an older, interrupted run left)."""
    return (folder / COMPLETE_FILE).is_file()


def _take_place_of(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; a folder already there is moved aside first, then deleted."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _generate(config: GeneratorConfig) -> GeneratedDataset:
    out = Path(config.out)
    world = _World(config)
    sessions = _Sessions.draw(config, world)
    good_lines = {(FileKind.SAMPLE_SKELETON, s): sessions.samples_in(s) for s in SPLITS} | {
        (FileKind.COMMON_FEATURES, s): len(sessions.split_range(s)) for s in SPLITS
    }
    plans = {key: _insertion_plan(config, *key, good) for key, good in good_lines.items()}

    def sample_lines(split: str) -> int:
        good = good_lines[(FileKind.SAMPLE_SKELETON, split)]
        return (
            good
            + len(plans[(FileKind.SAMPLE_SKELETON, split)])
            + int(config.malformed_fraction > 0 and good > 0)
        )

    tally = _Tally(Timeline(config.event_time, sample_lines("train"), sample_lines("test")))
    file_stats: dict[str, dict[str, Any]] = {}
    malformed: list[dict[str, Any]] = []
    with tqdm(
        total=config.rows + len(sessions.sizes),
        unit="line",
        desc="generate",
        disable=not config.progress,
        file=sys.stderr,
    ) as progress:
        first_sample_id = 1
        for split in SPLITS:
            writer = _SplitWriter(
                config, world, sessions, split, {k: plans[(k, split)] for k in FileKind}, tally, progress
            )
            file_stats |= writer.write(first_sample_id)
            malformed += writer.malformed
            first_sample_id += writer.good_samples
    truth = _truth(config, world, sessions, file_stats, tally, malformed)
    truth_path = out / TRUTH_FILE
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    malformed_path = out / MALFORMED_FILE
    if malformed:
        malformed_path.write_text(json.dumps(malformed, indent=1) + "\n")
    else:
        malformed_path.unlink(missing_ok=True)
    files = {name: out / name for name in file_stats}
    return GeneratedDataset(out, files, truth_path, malformed_path if malformed else None, truth)


def _truth(
    config: GeneratorConfig,
    world: _World,
    sessions: _Sessions,
    file_stats: dict[str, dict[str, Any]],
    tally: _Tally,
    malformed: list[dict[str, Any]],
) -> dict[str, Any]:
    realized: dict[str, dict[str, Any]] = {}
    per_day = []
    for split, table in tally.per_day.items():
        impressions, clicks, conversions = (int(x) for x in table.sum(axis=1))
        rows = tally.common_rows[split]
        realized[split] = {
            "samples": impressions,
            "clicks": clicks,
            "conversions": conversions,
            "ctr": _ratio(clicks, impressions),
            "cvr": _ratio(conversions, clicks),
            "common_rows": rows,
            "mean_samples_per_common": _ratio(impressions, rows),
            "mean_common_entries": _ratio(tally.common_entries[split], rows),
        }
        for d, day in enumerate(config.event_time.dates()):
            if table[0, d]:
                per_day.append(
                    {
                        "split": split,
                        "day": day.isoformat(),
                        "impressions": int(table[0, d]),
                        "clicks": int(table[1, d]),
                        "conversions": int(table[2, d]),
                    }
                )
    total = {k: realized["train"][k] + realized["test"][k] for k in ("samples", "clicks", "conversions")}
    realized["all"] = {
        **total,
        "ctr": _ratio(total["clicks"], total["samples"]),
        "cvr": _ratio(total["conversions"], total["clicks"]),
    }
    config_json = {k: v for k, v in asdict(config).items() if k not in ("out", "event_time", "progress")}
    config_json |= {"start_date": config.event_time.start_date.isoformat(), "days": config.event_time.days}
    by_reason: dict[str, int] = {}
    for item in malformed:
        by_reason[item["reason"]] = by_reason.get(item["reason"], 0) + 1
    oracle_auc = tally.oracle.auc()
    return {
        "generator": "taobao_assets.source.generate",
        "config": config_json,
        "files": file_stats,
        "population": {
            "users": world.n_users,
            "items": world.n_items,
            "categories": world.n_categories,
            "shops": world.n_shops,
            "brands": world.n_brands,
            "intention_nodes": world.n_intentions,
            "sessions": {s: len(sessions.split_range(s)) for s in SPLITS},
            "users_with_sessions": len(np.unique(sessions.users)),
        },
        "signal": {
            "click_logit": "base + user_effect[user] + item_effect[item] + category_effect[item category] "
            "+ affinity_effect * (item category in the user's preferred categories) "
            "+ position_effects[position]",
            "base_logit": round(world.base_logit, 6),
            "user_effect_sd": world.user_effect_sd,
            "item_effect_sd": world.item_effect_sd,
            "category_effect_sd": world.category_effect_sd,
            "affinity_effect": world.affinity_effect,
            "position_effects": world.position_effects.tolist(),
            "position_probabilities": world.position_probabilities.tolist(),
            "preferred_impression_share": world.preferred_share,
            "conversion_logit": "given a click: conversion_base_logit "
            "+ conversion_item_coefficient * item_effect[item]",
            "conversion_base_logit": round(world.conversion_base_logit, 6),
            "conversion_item_coefficient": world.conversion_item_coefficient,
            "oracle_auc": None if oracle_auc is None else round(oracle_auc, 4),
            # Per day of event time, both splits: what a model scored on that day's impressions can reach.
            "oracle_auc_by_day": {day.isoformat(): round(auc, 4) for day, bins in
                                  zip(config.event_time.dates(), tally.oracle_by_day, strict=True)
                                  if (auc := bins.auc()) is not None},
            "ctr_with_affinity": _ratio(tally.affinity[1, 1], tally.affinity[1, 0]),
            "ctr_without_affinity": _ratio(tally.affinity[0, 1], tally.affinity[0, 0]),
        },
        "realized": realized,
        "per_day": per_day,
        "malformed": {"count": len(malformed), "by_reason": by_reason},
    }


def _parse_args(argv: Sequence[str] | None) -> GeneratorConfig:
    parser = argparse.ArgumentParser(
        prog="python -m taobao_assets.source.generate",
        description="Write synthetic Ali-CCP files in the raw format.",
    )
    parser.add_argument("--rows", type=int, required=True, help="good sample lines, train + test")
    parser.add_argument("--days", type=int, default=EventTimeConfig.days, help="days of simulated event time")
    parser.add_argument(
        "--start-date",
        type=date.fromisoformat,
        default=EventTimeConfig.start_date,
        help="first day of event time (YYYY-MM-DD, UTC)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="folder for the files (created)")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument(
        "--malformed-fraction",
        type=float,
        default=0.0,
        help="malformed lines inserted per good line (each reason at least once per file)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        return GeneratorConfig(
            rows=args.rows,
            seed=args.seed,
            out=args.out,
            test_fraction=args.test_fraction,
            event_time=EventTimeConfig(args.start_date, args.days),
            malformed_fraction=args.malformed_fraction,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> None:
    dataset = generate(_parse_args(argv))
    realized = dataset.truth["realized"]["all"]
    lines = ", ".join(f"{name} {stats['lines']} lines" for name, stats in dataset.truth["files"].items())
    print(f"wrote {dataset.folder}: {lines}")
    print(
        f"samples {realized['samples']}, ctr {realized['ctr']}, cvr {realized['cvr']}, "
        f"oracle AUC {dataset.truth['signal']['oracle_auc']}, malformed {dataset.truth['malformed']['count']}"
    )


if __name__ == "__main__":
    main()
