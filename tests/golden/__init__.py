# generated from spec/*.asyncapi.yaml by spectask — do not edit
# spec sha256: c1589044804cc869cd898520312d4012b1c0c7add9f994ce18050d4910da88d2
"""Typed spectask clients generated from the AsyncAPI documents in spec/.

`models` holds the message payloads, `topology` the exchanges, queues, priorities and task
policies; each service document has its own module (client, echoer).
Regenerate with `make generate`; never edit these files by hand.
"""
