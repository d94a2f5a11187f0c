"""The Kafka adapter: the only package that imports confluent_kafka."""

from pipeline.kafka import config
from pipeline.kafka.admin import KafkaAdmin, LagMonitor, TopicInfo
from pipeline.kafka.clients import KafkaConsumer, KafkaProducer
from pipeline.kafka.errors import delivery_error

__all__ = [
    "KafkaAdmin",
    "KafkaConsumer",
    "KafkaProducer",
    "LagMonitor",
    "TopicInfo",
    "config",
    "delivery_error",
]
