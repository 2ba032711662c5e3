# generated from rpc_spec/*.asyncapi.yaml by spectask — do not edit
# spec sha256: c21cdb0608eace005e63ce2cff3aa28572cd5856826d7eadb66c9c07d896343c
"""Typed spectask clients generated from the AsyncAPI documents in rpc_spec/.

`models` holds the message payloads, `topology` the exchanges, queues, priorities and task
policies; each service document has its own module (requester, responder).
Regenerate with `make generate`; never edit these files by hand.
"""
