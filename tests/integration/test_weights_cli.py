"""`rlhf weights list|rollback` against a real Redis."""
from __future__ import annotations

import torch

from rlhf.cli import main
from rlhf.common.registry import WeightStore
from rlhf.common.settings import RedisSettings


def test_list_and_rollback(stack, redis_prefix, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", stack.redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_prefix)
    store = WeightStore(RedisSettings(url=stack.redis_url, key_prefix=redis_prefix), kind="policy")
    store.publish_state_dict({"w": torch.zeros(4)}, metrics={"score": 0.5})
    store.publish_state_dict({"w": torch.ones(4)}, parent_version=1, metrics={"score": 0.7})
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "* v2" in out and "  v1" in out and "score=0.7" in out
    assert main(["weights", "rollback", "--to", "1"]) == 0
    assert store.current_version() == 1
    assert main(["weights", "rollback", "--to", "9"]) == 1
    assert "9" in capsys.readouterr().out
    assert main(["weights", "rollback"]) == 2
