"""The on-disk spool: order, bounds, partial acks, restarts and torn tails."""
from __future__ import annotations

import time

import pytest
from rlhf.common.spool import DiskSpool, SpoolFull, SpoolRecord


def _records(n: int, start: int = 0, size: int = 10) -> list[SpoolRecord]:
    return [SpoolRecord("t", f"k{i}".encode() if i % 3 else None, str(i).encode().ljust(size, b".")) for i in range(start, start + n)]


def _drain(spool: DiskSpool, batch: int = 7) -> list[SpoolRecord]:
    out = []
    while spool.backlog:
        records, pos = spool.read(batch)
        assert records, "backlog but nothing to read"
        out.extend(records)
        spool.ack(pos)
    return out


def test_order_is_preserved_across_segments(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=1_000_000, segment_bytes=200)
    recs = _records(100)
    for i in range(0, 100, 9):
        spool.append(recs[i : i + 9])
    assert spool.backlog == 100
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert _drain(spool) == recs
    assert spool.backlog == 0 and spool.bytes == 0
    assert not list(tmp_path.glob("*.seg")), "an empty spool leaves no segments behind"


def test_read_does_not_consume_until_ack(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=100_000)
    spool.append(_records(5))
    first, _ = spool.read(3)
    again, pos = spool.read(3)
    assert first == again
    spool.ack(pos)
    rest, _ = spool.read(10)
    assert [r.value[:1] for r in rest] == [b"3", b"4"]


def test_bound_refuses_whole_batch(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=2048)
    spool.append(_records(10, size=100))
    with pytest.raises(SpoolFull):
        spool.append(_records(20, size=100))
    assert spool.backlog == 10, "a refused batch is stored not even in part"
    assert spool.bytes <= 2048
    _drain(spool)
    spool.append(_records(10, size=100))  # room again once delivered


def test_restart_resumes_after_last_ack(tmp_path):
    recs = _records(50)
    spool = DiskSpool(tmp_path, max_bytes=1_000_000, segment_bytes=300)
    spool.append(recs[:30])
    spool.append(recs[30:])
    got, pos = spool.read(4)
    spool.ack(pos)
    spool.close()

    reopened = DiskSpool(tmp_path, max_bytes=1_000_000, segment_bytes=300)
    assert reopened.backlog == 46
    reopened.append(_records(5, start=50))
    assert got + _drain(reopened) == recs + _records(5, start=50)


def test_one_owner_per_directory(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=10_000)
    with pytest.raises(RuntimeError, match="in use"):
        DiskSpool(tmp_path, max_bytes=10_000)
    spool.close()
    DiskSpool(tmp_path, max_bytes=10_000).close()


def test_torn_tail_is_truncated_on_open(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=100_000)
    spool.append(_records(3))
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    whole = seg.read_bytes()
    seg.write_bytes(whole + SpoolRecord("t", b"k", b"half written").encode()[:9])  # crash mid-append

    reopened = DiskSpool(tmp_path, max_bytes=100_000)
    assert reopened.backlog == 3
    assert seg.read_bytes() == whole
    assert _drain(reopened) == _records(3)


def test_corrupt_record_ends_the_valid_prefix(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=100_000)
    spool.append(_records(4))
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # flip a byte of the last record: its crc no longer matches
    seg.write_bytes(bytes(data))
    assert DiskSpool(tmp_path, max_bytes=100_000).backlog == 3


def test_producer_refuses_loudly_when_broker_is_away_and_spool_full(tmp_path):
    """No broker listens on the port: events are spooled until the bound, then publish raises."""
    from prometheus_client import REGISTRY
    from rlhf.common.events import ChatLogged
    from rlhf.common.kafka import EventProducer, ProducerClosed
    from rlhf.common.procs import free_port
    from rlhf.common.settings import KafkaSettings

    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", spool_dir=str(tmp_path),
                             spool_max_bytes=16 * 1024)
    producer = EventProducer(settings, "spool-full-test")
    before = REGISTRY.get_sample_value("rlhf_events_spool_rejected_total",
                                       {"service": "spool-full-test", "topic": "t"}) or 0.0
    accepted = 0
    with pytest.raises(SpoolFull):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            producer.publish("t", "k", ChatLogged(answer="x" * 500))
            accepted += 1
            time.sleep(0.001)
    assert 0 < producer.backlog <= accepted
    assert producer.backlog * 500 <= 16 * 1024
    after = REGISTRY.get_sample_value("rlhf_events_spool_rejected_total", {"service": "spool-full-test", "topic": "t"})
    assert after == before + 1
    assert REGISTRY.get_sample_value("rlhf_events_spool_backlog", {"service": "spool-full-test"}) == producer.backlog
    producer.close(timeout=0)
    with pytest.raises(ProducerClosed):
        producer.publish("t", "k", ChatLogged())
