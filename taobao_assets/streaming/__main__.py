"""``python -m taobao_assets.streaming follow|status|reset``: the continuous consumer and its tools."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import Counter
from typing import Any

from taobao_assets.settings import get_settings
from taobao_assets.streaming.dead_letter import read_dead_letters, replay_dead_letters
from taobao_assets.streaming.follow import follow
from taobao_assets.streaming.online import drop_online_rows
from taobao_assets.streaming.resource import StreamingResource


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _follow(streaming: StreamingResource, ctr_prior: float | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    report = await follow(streaming, stop, ctr_prior=ctr_prior, log=_log)
    _log(f"stopped after {report.samples_committed:,} sample records in {report.seconds:,.0f} s")
    return 0


def status(streaming: StreamingResource) -> dict[str, Any]:
    """Applied and end offsets, lag, who holds the lease, the follower's progress and the totals."""
    state = streaming.state()
    try:
        ends = asyncio.run(streaming.kafka.end_offsets(streaming.topics.samples.name))
    except ValueError:
        ends = {}
    applied = state.sample_offsets()
    return {
        "stream": streaming.topics.samples.name,
        "applied_offsets": applied,
        "end_offsets": ends,
        "lag_records": sum(max(0, end - applied.get(p, 0)) for p, end in ends.items()),
        "lease_holder": state.lease_holder(),
        "follower_progress": state.progress(),
        "totals": state.totals(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taobao_assets.streaming", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("follow", help="apply sample records continuously (Ctrl-C or SIGTERM stops cleanly)")
    run.add_argument("--ctr-prior", type=float,
                     help="pin the CTR prior (default: the latest gold day's CTR, else the stream's)")
    run.add_argument("--flush-seconds", type=float, default=0.0,
                     help="write the online store at most this often (default: after every commit)")
    run.add_argument("--lease-seconds", type=float, default=30.0,
                     help="how long the lease of a dead follower blocks the sensor's runs (default 30)")
    sub.add_parser("status", help="offsets, lag, lease and progress of the stream, as JSON")
    letters = sub.add_parser("dead-letters", help="the dead letters not replayed yet, by reason; or replay some")
    letters.add_argument("--replay", metavar="REASON",
                         help="send the letters of REASON back to their topics (once their cause is fixed)")
    reset = sub.add_parser("reset", help="delete the stream's state (after its topics were re-created)")
    reset.add_argument("--online", action="store_true", help="also delete its rows from Feast online")
    reset.add_argument("--yes", action="store_true", help="really delete")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "follow":
        streaming = StreamingResource.from_settings(settings, follow_flush_seconds=args.flush_seconds,
                                                    lease_seconds=args.lease_seconds)
        return asyncio.run(_follow(streaming, args.ctr_prior))
    streaming = StreamingResource.from_settings(settings)
    if args.command == "status":
        print(json.dumps(status(streaming), indent=2))
        return 0
    if args.command == "dead-letters":
        topic = streaming.topics.dead_letter.name
        try:
            if args.replay:
                sent = asyncio.run(replay_dead_letters(streaming.kafka, topic, args.replay))
                print(f"sent {sent} dead letters of reason {args.replay} back to their topics")
                return 0
            stored = asyncio.run(read_dead_letters(streaming.kafka, topic))
        except ValueError as no_topic:  # no dead letter yet: the first applier creates the topic
            parser.exit(2, f"{no_topic}\n")
        print(json.dumps({"topic": topic, "by_reason": Counter(letter.reason for letter in stored)}, indent=2))
        return 0
    if not args.yes:
        parser.error("reset deletes the counters and applied offsets of the stream; add --yes")
    state = streaming.state()
    if args.online:
        rows = drop_online_rows(state, streaming.feast)
        print(f"deleted {rows} online rows of Feast project {streaming.feast.project}")
    print(f"deleted {state.reset()} keys of {streaming.topics.samples.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
