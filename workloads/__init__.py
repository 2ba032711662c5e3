"""The real task handlers: image processing, data analysis, report generation and e-mail.

The core modules (`images`, `analysis`, `reports`, `mail`) are plain typed functions over
plain values and know nothing about AMQP or the generated models; `handlers` adapts the
generated payload models to them and registers everything on a generated `WorkerApp`.
"""
