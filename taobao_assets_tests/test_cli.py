"""The command lines' answers to bad input: one line naming the input and what to do, no traceback.

Nothing here reaches a server: whatever would (a Kafka client, the Feast registry, the demo's
runs) is replaced by a stand-in that fails the test if it is reached.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from feast.errors import FeatureServiceNotFoundException

from taobao_assets import retrieval
from taobao_assets.source import replay


def unreachable(*_: Any, **__: Any) -> NoReturn:
    raise AssertionError("bad input went past the command line's checks")


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The last line of stderr, once sure that there is no traceback before it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize("rate", ["0", "-5", "abc", "inf", "nan"])
def test_replay_refuses_a_rate_that_is_not_positive(rate: str, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(replay.KafkaClient, "from_settings", unreachable)
    monkeypatch.setattr(replay, "run_replay", unreachable)
    with pytest.raises(SystemExit) as exited:
        replay.main(["--rate", rate])
    assert exited.value.code == 2
    assert error_line(capsys) == (
        f"python -m taobao_assets.source.replay: error: argument --rate: {rate!r} is not a positive number of "
        f"events per second: give e.g. --rate 5000, or leave --rate out to replay as fast as possible")


def test_replay_takes_a_positive_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    class Reached(Exception):
        pass

    def run_replay(*args: Any, **_: Any) -> NoReturn:
        raise Reached(args[3])

    monkeypatch.setattr(replay.KafkaClient, "from_settings", lambda _: None)
    monkeypatch.setattr(replay, "run_replay", run_replay)
    with pytest.raises(Reached) as reached:
        replay.main(["--rate", "2.5"])
    assert reached.value.args == (2.5,)


def test_retrieval_names_the_services_it_knows(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(retrieval.OnlineFeatures, "from_settings", unreachable)
    assert retrieval.main(["online", "--service", "ctr_model_v9", "--user", "1"]) == 2
    assert error_line(capsys) == ("error: --service 'ctr_model_v9' is not a feature service of this project: "
                                  "use one of ctr_model_v1, ctr_model_v1_realtime")


def test_retrieval_of_a_service_not_registered_yet_says_how_to_register_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class EmptyRegistry:
        def lookup(self, service: str, **_: int) -> NoReturn:
            raise FeatureServiceNotFoundException(service, "taobao")

    monkeypatch.setattr(retrieval.OnlineFeatures, "from_settings", EmptyRegistry)
    assert retrieval.main(["online", "--service", "ctr_model_v1_realtime", "--user", "1"]) == 2
    assert error_line(capsys) == ("error: Feature service ctr_model_v1_realtime does not exist in project taobao: "
                                  "register the project's services first (Dagster's feast_apply_job; "
                                  "the demo runs it)")
