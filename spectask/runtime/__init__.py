"""The runtime: the only package that talks to RabbitMQ (through aio-pika)."""
