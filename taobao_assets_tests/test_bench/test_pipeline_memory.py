"""The pipeline benchmark's memory within a stage: the samples between the stage's start and end only."""

from __future__ import annotations

from bench.pipeline import PeakMemory, Sample, _peak_cell

SUMS = ("tree_rss", "servers_rss", "tree_pss", "servers_pss")


def test_a_stages_peak_is_read_from_the_samples_within_it() -> None:
    memory = PeakMemory(root=0, servers=[])
    memory.samples = [Sample(10.0, 900.0, 50.0, 800.0, 45.0), Sample(11.0, 300.0, 70.0, 250.0, 30.0),
                      Sample(12.0, 400.0, 60.0, 200.0, 55.0), Sample(13.0, 800.0, 40.0, 700.0, 35.0)]
    # the bounds are inside the stage; each sum peaks on its own sample
    assert memory.peaks(11.0, 12.0) == {"tree_rss": 400.0, "servers_rss": 70.0, "tree_pss": 250.0,
                                        "servers_pss": 55.0, "tree_roles": ()}
    assert memory.peaks() == {"tree_rss": 900.0, "servers_rss": 70.0, "tree_pss": 800.0, "servers_pss": 55.0,
                              "tree_roles": ()}
    assert memory.peaks(20.0, 30.0) == {**dict.fromkeys(SUMS, 0.0), "tree_roles": ()}


def test_samples_without_pss_count_for_rss_only() -> None:
    memory = PeakMemory(root=0, servers=[])
    memory.samples = [Sample(10.0, 500.0, 50.0, 400.0, 45.0), Sample(11.0, 900.0, 90.0)]
    assert memory.peaks() == {"tree_rss": 900.0, "servers_rss": 90.0, "tree_pss": 400.0, "servers_pss": 45.0,
                              "tree_roles": ()}


def test_the_owners_of_the_pipelines_pss_peak_come_from_the_sample_that_holds_it() -> None:
    memory = PeakMemory(root=0, servers=[])
    at_peak = (("driver (Python)", 600.0), ("Spark JVM", 300.0))
    memory.samples = [Sample(10.0, 950.0, 50.0, 700.0, 45.0, (("Spark JVM", 500.0), ("driver (Python)", 200.0))),
                      Sample(11.0, 900.0, 90.0, 900.0, 40.0, at_peak),
                      Sample(12.0, 990.0, 90.0)]
    assert memory.peaks()["tree_roles"] == at_peak
    assert memory.peaks(10.0, 10.5)["tree_roles"] == (("Spark JVM", 500.0), ("driver (Python)", 200.0))


def test_a_stage_no_pss_sample_fell_in_reads_as_unsampled_not_as_zero_megabytes() -> None:
    assert _peak_cell([0, 0]) == "no sample in the stage"
    assert _peak_cell([4609, 2500]) == "4,609 / 2,500 MB"
