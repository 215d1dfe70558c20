"""Kafka-compatible murmur2 and key partitioning."""

import uuid

import pytest

from pipeline.core.partitioner import murmur2, partition_for_key, to_positive

# The exact cases of Apache Kafka's clients UtilsTest.testMurmur2 (Java's signed int results).
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
def test_murmur2_matches_kafka_utils_test(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_murmur2_covers_every_tail_length_and_stays_in_signed_32_bit_range() -> None:
    # Lengths 0..7 exercise the empty input and each of the 0-3 leftover-byte branches.
    for length in range(8):
        h = murmur2(b"k" * length)
        assert -(2**31) <= h < 2**31


def test_murmur2_refuses_text() -> None:
    with pytest.raises(TypeError):
        murmur2("abc")  # type: ignore[arg-type]


def test_to_positive_masks_the_sign_bit() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(0) == 0
    assert to_positive(123) == 123
    assert to_positive(-973932308) == -973932308 & 0x7FFFFFFF


def test_partition_for_key_is_to_positive_murmur2_modulo() -> None:
    # "21" hashes negative: masking, not abs(), decides its partition.
    assert partition_for_key(b"21", 6) == (-973932308 & 0x7FFFFFFF) % 6
    assert partition_for_key(b"abc", 6) == 479470107 % 6


def test_partition_for_key_is_in_range_and_stable() -> None:
    keys = [str(uuid.UUID(int=i)).encode() for i in range(500)]
    for num_partitions in (1, 3, 6, 7):
        first = [partition_for_key(key, num_partitions) for key in keys]
        again = [partition_for_key(key, num_partitions) for key in keys]
        assert first == again
        assert all(0 <= p < num_partitions for p in first)
    # 500 distinct keys over 6 partitions should reach every partition.
    assert {partition_for_key(key, 6) for key in keys} == set(range(6))


@pytest.mark.parametrize("num_partitions", [0, -1])
def test_partition_for_key_refuses_non_positive_partition_counts(num_partitions: int) -> None:
    with pytest.raises(ValueError, match="num_partitions"):
        partition_for_key(b"abc", num_partitions)
