# generated from rpc_spec/*.asyncapi.yaml by spectask — do not edit
# spec sha256: 5c867ee37c8df42fb5f3c915f243c6558e75b06fc13b26ae7841bd1520491ae7
"""Typed spectask clients generated from the AsyncAPI documents in rpc_spec/.

`models` holds the message payloads, `topology` the exchanges, queues, priorities and task
policies; each service document has its own module (requester, responder).
Regenerate with `make generate`; never edit these files by hand.
"""
