"""The `spectask` subcommands; the top-level mains are thin wrappers around these."""
