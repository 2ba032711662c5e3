# generated from spec/*.asyncapi.yaml by spectask — do not edit
# spec sha256: 61bed02f7d9ad510995663afd0166fe7110bfcc61d6d8b45f8fb3d68cec7b8bb
"""Typed spectask clients generated from the AsyncAPI documents in spec/.

`models` holds the message payloads, `topology` the exchanges, queues, priorities and task
policies; each service document has its own module (client, echoer).
Regenerate with `make generate`; never edit these files by hand.
"""
