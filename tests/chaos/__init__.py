"""Support for the chaos suite (tests/test_chaos.py, `make chaos`): faults during live batches."""
