from __future__ import annotations

from pathlib import Path

import pytest

from cryptovol_ingest.spool import CURSOR_FILE, Spool, SpoolRecord


def records(start: int, n: int, key: bytes = b"BTC-USD") -> list[tuple[float, bytes, bytes]]:
    return [(1000.0 + i, key, b'{"n":%d}' % i) for i in range(start, start + n)]


def values(out: list[SpoolRecord]) -> list[bytes]:
    return [r.value for r in out]


def ack(spool: Spool, out: list[SpoolRecord]) -> None:
    spool.commit(out[-1].end, len(out))


def test_records_come_back_in_order_with_their_receive_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.append(records(0, 5)) == 5
    spool.flush()
    out = spool.read(3) + spool.read(10)
    assert values(out) == [b'{"n":%d}' % i for i in range(5)]
    assert [r.received for r in out] == [1000.0 + i for i in range(5)]
    assert (spool.unsent, spool.unacked) == (0, 5)
    ack(spool, out)
    assert spool.unacked == 0
    spool.close()


def test_unacknowledged_records_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(records(0, 10))
    out = spool.read(10)
    ack(spool, out[:4])  # Kafka acknowledged 0..3; 4..9 were in flight
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert reopened.unacked == reopened.unsent == 6
    assert values(reopened.read(100)) == [b'{"n":%d}' % i for i in range(4, 10)]
    reopened.append(records(10, 2))
    assert values(reopened.read(100)) == [b'{"n":10}', b'{"n":11}']
    reopened.close()


def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(records(0, 3))
    spool.close()
    [segment] = [p for p in tmp_path.glob("*.seg") if p.stat().st_size]
    with segment.open("ab") as f:
        f.write(b"1000.5\tBTC-USD\t{\"n\":")  # a crash in the middle of a write
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert values(reopened.read(10)) == [b'{"n":%d}' % i for i in range(3)]
    reopened.close()


def test_segments_rotate_and_are_deleted_once_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024)
    spool.append(records(0, 200))
    assert len(list(tmp_path.glob("*.seg"))) > 3
    out = spool.read(1000)
    assert len(out) == 200
    ack(spool, out)
    assert len(list(tmp_path.glob("*.seg"))) <= 2
    assert (tmp_path / CURSOR_FILE).exists()
    spool.close()
    assert Spool(tmp_path, max_bytes=1 << 20).unacked == 0


def test_the_bound_refuses_new_records_and_keeps_old_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=600, segment_bytes=10_000)
    accepted = spool.append(records(0, 50))
    assert 0 < accepted < 50
    assert spool.bytes_on_disk <= 600
    out = spool.read(100)
    assert values(out) == [b'{"n":%d}' % i for i in range(accepted)]  # drop-newest
    ack(spool, out)
    spool.close()


def test_a_backlog_larger_than_memory_is_read_back_from_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 22, segment_bytes=4096, memory_records=10)
    spool.append(records(0, 25))
    first = spool.read(5)
    spool.append(records(25, 100))  # more than fits in memory
    rest = []
    while chunk := spool.read(7):
        rest.extend(chunk)
    assert values(first + rest) == [b'{"n":%d}' % i for i in range(125)]
    ends = [r.end for r in first + rest]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    spool.append(records(125, 3))  # caught up: back to the memory copy
    assert values(spool.read(10)) == [b'{"n":%d}' % i for i in range(125, 128)]
    spool.close()


def test_multi_line_values_are_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    with pytest.raises(ValueError):
        spool.append([(1.0, b"k", b"a\nb")])
    spool.close()
