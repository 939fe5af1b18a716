"""Settings of the simulated users (`RLHF_SIMULATE_*`); the CLI flags override them."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from rlhf.common.settings import _config


class SimulateSettings(BaseSettings):
    """How many simulated users there are, what they like, and how they behave."""

    model_config = _config("RLHF_SIMULATE_")

    target: str = "127.0.0.1:50051"
    """host:port of the chat API."""
    users: int = Field(default=8, ge=1)
    """Concurrent users; each chats, waits, gives feedback, thinks, and starts again."""
    duration_s: float = Field(default=60.0, ge=0)
    """How long to run; 0 runs until SIGTERM/SIGINT."""
    preference: str = "rlhf.simulate.preferences:default_preference"
    """The users' hidden preference, an importable `module:function`."""
    prompts: str = ""
    """Prompts JSONL with scenarios (prompts.jsonl). Empty: users make up fresh prompts from the world generator."""
    seed: int = 0
    """Seed of every user's choices (user i uses seed + i)."""
    turns_per_identity: int = Field(default=20, ge=0)
    """Turns after which a simulated session continues as a new pseudonymous end user (0: never).
    Each of the `users` sessions stands for a stream of real people, not one person chatting
    non-stop, so the reward trainer's per-user flood cap (`RLHF_REWARD_USER_CAP`) sees realistic traffic."""
    think_time_s: float = Field(default=0.2, ge=0)
    """Mean pause between a user's actions (exponentially distributed)."""
    p_compare: float = Field(default=0.2, ge=0, le=1)
    """Probability that a turn asks for two candidates and picks one."""
    p_stream: float = Field(default=0.3, ge=0, le=1)
    """Probability that a single-answer turn uses the streaming call."""
    p_comment: float = Field(default=0.1, ge=0, le=1)
    """Probability of leaving a comment on a single answer."""
    api_key: str = ""
    """Sent as `x-api-key` metadata when the API requires a key."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Deadline of each call."""
    report_every_s: float = Field(default=10.0, gt=0)
    """Seconds between progress log lines."""
