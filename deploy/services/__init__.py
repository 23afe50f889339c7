"""Every service of the stack, in start order (a service may depend on those before it)."""

from deploy.service import Service
from deploy.services.kafka import Kafka
from deploy.services.minio import Minio
from deploy.services.postgres import Postgres
from deploy.services.redis import Redis
from deploy.services.spark import Spark
from deploy.services.trino import Trino

SERVICES: list[type[Service]] = [Postgres, Redis, Kafka, Minio, Trino, Spark]
