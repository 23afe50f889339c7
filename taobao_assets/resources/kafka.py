"""Kafka as a Dagster resource: the replay writes the Ali-CCP topics, bronze and the streaming
runs read them. The client methods are in :mod:`taobao_assets.resources.kafka_client`."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from taobao_assets.resources.kafka_client import KafkaClients, TopicSpec
from taobao_assets.settings import Settings

__all__ = ["KafkaResource", "TopicSpec"]


class KafkaResource(ConfigurableResource, KafkaClients):
    bootstrap_servers: str
    username: str
    password: str = Field(repr=False)
    client_id: str = "taobao-feature-platform"
    replication_factor: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaResource:
        return cls(bootstrap_servers=settings.kafka_bootstrap_servers, username=settings.kafka_user,
                   password=settings.kafka_password)
