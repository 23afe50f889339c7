"""The pipeline benchmark's memory within a stage: the samples between the stage's start and end only."""

from __future__ import annotations

from bench.pipeline import PeakMemory


def test_a_stages_peak_is_read_from_the_samples_within_it() -> None:
    memory = PeakMemory(root=0, servers=[])
    memory.samples = [(10.0, 900.0, 50.0), (11.0, 300.0, 70.0), (12.0, 400.0, 60.0), (13.0, 800.0, 40.0)]
    assert memory.peaks(11.0, 12.0) == (400.0, 70.0)  # the bounds are inside the stage
    assert memory.peaks() == (900.0, 70.0)
    assert memory.peaks(20.0, 30.0) == (0.0, 0.0)  # no sample fell in it
