"""almhookd: a self-hosted webhook dispatcher for learning-platform events."""

__version__ = "0.1.0"
