"""Helpers the tests share: real receivers, the daemon in-process or as a subprocess,
sample events, a fake clock. Nothing here imports from ``conftest.py``."""
