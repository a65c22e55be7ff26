"""Core of the re-activation benchmark: model zoo, triggers, metrics, BEC/CKA,
the artifact store, the per-cell stage graph and the command line."""

__version__ = "0.1.0"
