"""Simulated users: a hidden preference (preferences.py), human-like feedback (behaviour.py)
and a driver that chats with the real gRPC API (driver.py)."""
