"""Drop what a benchmark's namespace left on the shared servers, once its figures are taken.

A namespace (``TFP_TOPIC_PREFIX``, ``TFP_LAKE_BUCKET``, ``TFP_POSTGRES_DB``, ``TFP_FEAST_PROJECT``) keeps
a benchmark's data apart from a demo's and the tests'. Left behind, each 1 M-sample run kept about
2 million Redis keys, 1 GB of database and its topics and bucket; the next run's data-set switch
then walked those keys too. Nothing here is timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from psycopg2 import sql

from deploy.services.postgres import Postgres
from taobao_assets.demo import forget_previous_data_set
from taobao_assets.resources.kafka_client import KafkaClient
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import load_settings
from taobao_assets.streaming.resource import StreamTopics


def drop_namespace(env: Mapping[str, str]) -> None:
    """Delete the online rows and stream state, the topics, the bucket and the database of the
    namespace that ``env``'s ``TFP_*`` variables name."""
    settings = load_settings(env)
    forget_previous_data_set(settings)
    topics = StreamTopics.of(settings.topic_prefix)
    asyncio.run(KafkaClient.from_settings(settings).delete_topics(
        [topics.samples.name, topics.common_features.name, topics.dead_letter.name]))
    s3 = S3Resource.from_settings(settings)
    if settings.lake_bucket in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}:
        s3.delete_keys(s3.list_keys(""))
        s3.client().delete_bucket(Bucket=settings.lake_bucket)
    Postgres(settings).execute([sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(settings.postgres_db))])
