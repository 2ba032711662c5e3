"""spectask: distributed task processing on RabbitMQ, typed from AsyncAPI 3 documents."""

__version__ = "0.1.0"
