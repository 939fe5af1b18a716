from __future__ import annotations

import pytest

from rlhf.common.settings import KafkaSettings, RedisSettings, SettingsError, describe, load


def test_defaults_load():
    k = load(KafkaSettings)
    assert k.acks == "all" and k.fetch_max_wait_ms >= 1


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b1:1,b2:2")
    monkeypatch.setenv("REDIS_URL", "redis://h:1/2")
    assert load(KafkaSettings).bootstrap_servers == "b1:1,b2:2"
    assert load(RedisSettings).url == "redis://h:1/2"


@pytest.mark.parametrize(
    "var,value",
    [("KAFKA_SESSION_TIMEOUT_MS", "soon"), ("KAFKA_ACKS", "2"), ("KAFKA_FETCH_MAX_WAIT_MS", "0")],
)
def test_bad_values_name_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load(KafkaSettings)
    assert var in str(err.value)


def test_every_field_is_documented():
    for cls in (KafkaSettings, RedisSettings):
        for row in describe(cls):
            assert row["help"], f"{row['variable']} has no docstring"
