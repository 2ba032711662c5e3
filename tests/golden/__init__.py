# generated from spec/*.asyncapi.yaml by spectask — do not edit
# spec sha256: e0719de3c4824cdb73c8206d79f8b771d7d19cc529fdf04c73a53335ad0641b7
"""Typed spectask clients generated from the AsyncAPI documents in spec/.

`models` holds the message payloads, `topology` the exchanges, queues, priorities and task
policies; each service document has its own module (client, echoer).
Regenerate with `make generate`; never edit these files by hand.
"""
