# generated from spec/*.asyncapi.yaml by spectask — do not edit
# spec sha256: f2113008eb22008f40130d783c1dac8d7b13ca8c4717af9084601a21699e2c34
"""Typed spectask clients generated from the AsyncAPI documents in spec/.

`models` holds the message payloads, `topology` the exchanges, queues, priorities and task
policies; each service document has its own module (client, echoer).
Regenerate with `make generate`; never edit these files by hand.
"""
