"""The Kafka adapter: the only package that imports confluent_kafka. ``KafkaTransport`` hands
out its clients as the ports of ``pipeline.ports``."""

from pipeline.kafka import config
from pipeline.kafka.admin import KafkaAdmin, LagMonitor, TopicInfo
from pipeline.kafka.clients import KafkaConsumer, KafkaProducer
from pipeline.kafka.errors import delivery_error
from pipeline.kafka.transport import KafkaTransport

__all__ = [
    "KafkaAdmin",
    "KafkaConsumer",
    "KafkaProducer",
    "KafkaTransport",
    "LagMonitor",
    "TopicInfo",
    "config",
    "delivery_error",
]
