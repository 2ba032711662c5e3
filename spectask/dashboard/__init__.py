"""The live dashboard: one page, its JSON API, server-sent events and Prometheus /metrics.

`spectask dashboard` serves it (uvicorn, 127.0.0.1 by default). Everything it shows comes from
the task store, the broker and the heartbeat stream, so restarting it loses nothing and any
number of dashboards can run side by side. Every asset is in `static/`, served by the package.
"""
