"""Throughput and latency of spectask, side by side with the same pipeline in raw aio-pika.

`make bench` runs `bench/run.py`; see its docstring for what is measured and how.
"""
