"""online-rlhf: a chat assistant that learns from its own users."""

__version__ = "0.1.0"
