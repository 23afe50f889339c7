"""A data set is whole or refused: the replay names a missing raw file, a generation that is interrupted
leaves nothing that looks like a data set, and the demo regenerates what an interrupted one left."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from taobao_assets.demo import ensure_data
from taobao_assets.settings import load_settings
from taobao_assets.source import generate as generate_module
from taobao_assets.source.event_time import EventTimeConfig
from taobao_assets.source.format import SPLITS, FileKind
from taobao_assets.source.generate import COMPLETE_FILE, TRUTH_FILE, GeneratedDataset, GeneratorConfig, generate
from taobao_assets.source.replay import checkpoint_file, replay, total_records
from taobao_assets.source.topics import RawTopics

RAW = [kind.file_name(split) for kind in FileKind for split in SPLITS]


def _copy(dataset: GeneratedDataset, to: Path, leave_out: str | None = None) -> Path:
    to.mkdir()
    for name in RAW:
        if name != leave_out:
            shutil.copy(dataset.folder / name, to / name)
    return to


@pytest.mark.parametrize("missing", RAW)
def test_replay_names_a_missing_raw_file_before_it_touches_kafka(malformed_dataset: GeneratedDataset,
                                                                tmp_path: Path, missing: str) -> None:
    folder = _copy(malformed_dataset, tmp_path / "raw", leave_out=missing)
    with pytest.raises(FileNotFoundError, match=rf"{missing} is missing"):
        total_records(folder)
    kafka: Any = None  # never reached: the files are checked first
    with pytest.raises(FileNotFoundError, match=rf"{missing} is missing"):
        asyncio.run(replay(folder, kafka, topics=RawTopics.of("t"), config=EventTimeConfig(),
                           checkpoint_dir=tmp_path / "checkpoints"))


def test_a_checkpoint_belongs_to_its_topics(malformed_dataset: GeneratedDataset, tmp_path: Path) -> None:
    one, other = (checkpoint_file(tmp_path, RawTopics.of(p), malformed_dataset.folder, EventTimeConfig())
                  for p in ("demo", "bench-1"))
    assert one != other
    assert checkpoint_file(tmp_path, RawTopics.of("demo"), malformed_dataset.folder, EventTimeConfig()) == one


def test_an_interrupted_generation_leaves_no_data_set_and_keeps_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "aliccp"
    first = generate(GeneratorConfig(rows=2_000, seed=1, out=out, progress=False))
    before = {name: path.read_bytes() for name, path in first.files.items()}
    assert (out / COMPLETE_FILE).is_file() and not list(tmp_path.glob(".aliccp.*"))

    def dies(self: Any, first_sample_id: int) -> Any:
        raise KeyboardInterrupt  # as a Ctrl-C or kill in the middle of the first split would
    monkeypatch.setattr(generate_module._SplitWriter, "write", dies)
    with pytest.raises(KeyboardInterrupt):
        generate(GeneratorConfig(rows=3_000, seed=2, out=out, progress=False))
    assert {name: path.read_bytes() for name, path in first.files.items()} == before

    with pytest.raises(KeyboardInterrupt):
        generate(GeneratorConfig(rows=3_000, seed=2, out=tmp_path / "fresh", progress=False))
    assert not (tmp_path / "fresh").exists()


def test_the_demo_regenerates_an_interrupted_generation_and_uses_real_files_as_they_are(
        malformed_dataset: GeneratedDataset, tmp_path: Path) -> None:
    settings = load_settings({"TFP_STATE_DIR": str(tmp_path / "state"), "TFP_SOURCE_DIR": str(tmp_path / "gen")})
    # What an older generator left when killed: the files at their final paths, cut short, no completion file.
    left = _copy(malformed_dataset, tmp_path / "gen")
    (left / TRUTH_FILE).write_text("{}")
    (left / RAW[0]).write_bytes((left / RAW[0]).read_bytes()[:1000])
    data = ensure_data(settings, rows=2_000)
    assert data.description.startswith("generated 2,000 samples")
    assert (left / COMPLETE_FILE).is_file()
    assert total_records(left) > 2_000

    real = _copy(malformed_dataset, tmp_path / "real")
    used = ensure_data(settings, rows=2_000, source=real)
    assert used.folder == real and not (real / COMPLETE_FILE).exists()
    assert total_records(real) == total_records(malformed_dataset.folder)

    (real / RAW[-1]).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{RAW[-1]} is missing"):
        ensure_data(settings, rows=2_000, source=real)


@pytest.mark.parametrize("rate", [0.0, -5.0, float("nan"), float("inf")])
def test_a_replay_rate_that_is_no_positive_number_is_refused_before_anything(
        malformed_dataset: GeneratedDataset, tmp_path: Path, rate: float) -> None:
    """The replay job's config reaches :func:`replay` without the CLI's check: it refuses by itself."""
    kafka: Any = None
    with pytest.raises(ValueError, match="give a positive number of events per second"):
        asyncio.run(replay(malformed_dataset.folder, kafka, topics=RawTopics.of("t"), config=EventTimeConfig(),
                           checkpoint_dir=tmp_path, rate=rate))
