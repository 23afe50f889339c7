"""The pipeline benchmark's memory within a stage: the samples between the stage's start and end only."""

from __future__ import annotations

from bench.pipeline import PeakMemory, Sample


def test_a_stages_peak_is_read_from_the_samples_within_it() -> None:
    memory = PeakMemory(root=0, servers=[])
    memory.samples = [Sample(10.0, 900.0, 50.0, 800.0, 45.0), Sample(11.0, 300.0, 70.0, 250.0, 30.0),
                      Sample(12.0, 400.0, 60.0, 200.0, 55.0), Sample(13.0, 800.0, 40.0, 700.0, 35.0)]
    # the bounds are inside the stage; each sum peaks on its own sample
    assert memory.peaks(11.0, 12.0) == {"tree_rss": 400.0, "servers_rss": 70.0, "tree_pss": 250.0,
                                        "servers_pss": 55.0}
    assert memory.peaks() == {"tree_rss": 900.0, "servers_rss": 70.0, "tree_pss": 800.0, "servers_pss": 55.0}
    assert memory.peaks(20.0, 30.0) == dict.fromkeys(("tree_rss", "servers_rss", "tree_pss", "servers_pss"), 0.0)


def test_samples_without_pss_count_for_rss_only() -> None:
    memory = PeakMemory(root=0, servers=[])
    memory.samples = [Sample(10.0, 500.0, 50.0, 400.0, 45.0), Sample(11.0, 900.0, 90.0)]
    assert memory.peaks() == {"tree_rss": 900.0, "servers_rss": 90.0, "tree_pss": 400.0, "servers_pss": 45.0}
