"""Kafka's default key partitioning, so code can tell which partition a task id lands on.

This is the hash Kafka's Java client (``Utils.murmur2``) and librdkafka's ``murmur2_random``
partitioner use for a non-null key; matching it bit for bit is what lets our producer, Java
clients and Kafka's CLI tools agree on where a key lives.
"""

__all__ = ["murmur2", "partition_for_key", "to_positive"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Return Kafka's 32-bit murmur2 hash of ``data`` as a signed int, like Java's ``int``."""
    data = bytes(data)  # refuses str with a TypeError instead of hashing characters
    length = len(data)
    # Python ints are unbounded: mask after every multiplication to keep Java's wrap-around,
    # and work unsigned throughout so ">>" behaves like Java's ">>>".
    h = (_SEED ^ length) & _MASK32
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = (h * _M) & _MASK32
        h ^= k

    remaining = length & 3
    if remaining == 3:
        h ^= data[tail + 2] << 16
    if remaining >= 2:
        h ^= data[tail + 1] << 8
    if remaining >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK32

    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Clear the sign bit like Kafka's ``Utils.toPositive`` (unlike ``abs``, safe for -2**31)."""
    return n & 0x7FFFFFFF


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Return the partition Kafka's default partitioner picks for a non-null ``key``."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be a positive integer; got {num_partitions}")
    return to_positive(murmur2(key)) % num_partitions
