"""The command lines' answers to bad input: one line naming the input and what to do, no traceback.

Nothing here reaches a server: whatever would (a Kafka client, the Feast registry, the demo's
runs) is replaced by a stand-in that fails the test if it is reached.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from feast.errors import FeatureServiceNotFoundException

import deploy.stack
import taobao_assets.cli
import taobao_assets.definitions
import taobao_assets.demo
from taobao_assets import retrieval
from taobao_assets.console import StageConsole
from taobao_assets.demo import StageFailed, Summary
from taobao_assets.settings import get_settings
from taobao_assets.source import replay

LOG = Path("/state/logs/demo-20261101-000000.log")


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


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """The process-wide settings read again from the environment the test sets, and again after it."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(("main", "argv", "prog"), [
    (replay.main, [], "python -m taobao_assets.source.replay"),
    (taobao_assets.cli.main, ["demo", "--no-ui"], "python -m taobao_assets.cli"),
    (deploy.stack.main, ["status"], "python -m deploy.stack"),
], ids=["replay", "demo", "stack"])
def test_a_bad_setting_ends_a_command_with_its_one_line(
        main: Callable[[list[str]], int], argv: list[str], prog: str, fresh_settings: None,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TFP_POSTGRES_PORT", "abc")
    monkeypatch.setattr(replay.KafkaClient, "from_settings", unreachable)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert error_line(capsys) == (f"{prog}: error: TFP_POSTGRES_PORT='abc' is not an integer: set it to a whole "
                                  f"number (default 15432) or unset it")


def failed_stage(name: str, error: Exception) -> StageFailed:
    """What the demo raises when ``error`` ends its stage ``name``."""
    summary = Summary(StageConsole(io.StringIO()))
    with pytest.raises(StageFailed) as failed, summary.stage(name):
        raise error
    assert failed.value.__cause__ is error
    return failed.value


def test_a_failed_stage_is_reported_with_its_error_and_the_log() -> None:
    failure = failed_stage("Feast apply", KeyError("user_features"))
    assert failure.report(LOG) == (
        "FAILED stage 'Feast apply': KeyError: 'user_features' (log: /state/logs/demo-20261101-000000.log, "
        "service logs beside it)")


def test_an_error_without_a_message_is_reported_by_its_type() -> None:
    failure = failed_stage("replay into Kafka", TimeoutError())
    assert failure.report(LOG).startswith("FAILED stage 'replay into Kafka': TimeoutError (log: ")


def test_a_failed_run_is_reported_with_the_stage_it_ran_in_on_one_line() -> None:
    # What Summary.record raises for a failed run: the step's error may run over several lines.
    run_failed = StageFailed("daily_batch_job 2026-11-01: run 1f2e failed in step gold__user_features: "
                             "ValueError: no rows for 2026-11-01\n  second line of the error")
    failure = failed_stage("bronze -> silver -> gold for 7 days", run_failed)
    assert failure.report(LOG) == (
        "FAILED stage 'bronze -> silver -> gold for 7 days': daily_batch_job 2026-11-01: run 1f2e failed in "
        "step gold__user_features: ValueError: no rows for 2026-11-01 … (log: "
        "/state/logs/demo-20261101-000000.log, service logs beside it)")


def test_the_demo_prints_a_failed_stage_as_one_line(tmp_path: Path, fresh_settings: None,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    def run_demo(*_: Any) -> NoReturn:
        raise StageFailed.in_stage("Feast apply", ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setenv("TFP_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(taobao_assets.definitions, "build_definitions", lambda _: None)
    monkeypatch.setattr(taobao_assets.demo, "run_demo", run_demo)
    assert taobao_assets.cli.main(["demo", "--no-ui"]) == 1
    err = capfd.readouterr().err
    (log,) = (tmp_path / "logs").glob("demo-*.log")
    assert err == (f"FAILED stage 'Feast apply': ConnectionRefusedError: [Errno 111] Connection refused "
                   f"(log: {log}, service logs beside it)\n")
