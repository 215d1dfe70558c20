"""The KRaft controller quorum, read with Kafka's DescribeQuorum API (api key 55).

confluent-kafka does not expose DescribeQuorum, so this module speaks the few bytes of Kafka's
wire protocol it needs over a plain TCP socket (PLAINTEXT only): an ApiVersions request (v0) to
learn which DescribeQuorum versions the broker supports, then DescribeQuorum at the highest of
0..2 both sides know. Any broker answers it: a broker forwards the request to the active
controller. The bootstrap addresses are tried in order until one answers, all within `timeout`.

The encoding and decoding functions are pure (bytes in, values out) and apart from the socket
code, so the unit tests check them with byte strings (tests/unit/test_quorum.py).

Field lists follow Kafka's DescribeQuorumRequest.json / DescribeQuorumResponse.json: every
version is "flexible" (compact strings and arrays, tagged fields); v1 adds LastFetchTimestamp and
LastCaughtUpTimestamp to each replica, v2 adds ErrorMessage (top level and per partition),
ReplicaDirectoryId and the Nodes array with each controller's listeners.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.core import clock

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

__all__ = [
    "ERROR_NAMES",
    "MalformedResponse",
    "QuorumReplica",
    "QuorumStatus",
    "QuorumUnavailable",
    "bootstrap_addresses",
    "decode_api_versions_response",
    "decode_compact_string",
    "decode_describe_quorum_response",
    "decode_unsigned_varint",
    "describe_quorum",
    "encode_api_versions_request",
    "encode_compact_string",
    "encode_describe_quorum_request",
    "encode_nullable_string",
    "encode_unsigned_varint",
    "error_name",
    "pick_describe_quorum_version",
    "quorum_describe_lines",
    "quorum_status",
]

API_VERSIONS = 18
DESCRIBE_QUORUM = 55
METADATA_TOPIC = "__cluster_metadata"
CLIENT_ID = "taskstream-quorum"
# The DescribeQuorum versions this module reads.
SUPPORTED_VERSIONS = range(0, 3)
# A DescribeQuorum answer is a few hundred bytes; anything near this is not Kafka talking.
_MAX_FRAME = 16 * 1024 * 1024
_ZERO_UUID = bytes(16)
# The least time one bootstrap address gets when many share the timeout (seconds).
_MIN_ATTEMPT = 0.5

# Kafka's error codes this reader may meet, by name (the rest are shown as "error code N").
ERROR_NAMES: dict[int, str] = {
    -1: "UNKNOWN_SERVER_ERROR",
    0: "NONE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER",
    7: "REQUEST_TIMED_OUT",
    8: "BROKER_NOT_AVAILABLE",
    13: "NETWORK_EXCEPTION",
    15: "COORDINATOR_NOT_AVAILABLE",
    29: "TOPIC_AUTHORIZATION_FAILED",
    31: "CLUSTER_AUTHORIZATION_FAILED",
    33: "UNSUPPORTED_SASL_MECHANISM",
    34: "ILLEGAL_SASL_STATE",
    35: "UNSUPPORTED_VERSION",
    41: "NOT_CONTROLLER",
    42: "INVALID_REQUEST",
    58: "SASL_AUTHENTICATION_FAILED",
}
# Errors no other broker would answer differently: the first one ends the call.
_FINAL_ERRORS = {29, 31, 58}


class QuorumUnavailable(Exception):
    """The quorum could not be read; the message says why in one line."""


class MalformedResponse(ValueError):
    """Bytes that are not the answer this reader expects (truncated, wrong correlation id, …)."""


class _ConnectionClosed(OSError):
    """The broker closed the connection before answering."""


# -- what the caller gets ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuorumReplica:
    """One voter or observer of the metadata log, as the active controller sees it."""

    id: int
    log_end_offset: int
    lag: int  # the leader's log end offset minus this one's (0 for the leader)
    last_fetch_ms_ago: int | None  # now minus LastFetchTimestamp; None when unknown (-1)
    last_caught_up_ms_ago: int | None  # now minus LastCaughtUpTimestamp; None when unknown
    directory_id: str | None = None  # v2+: the replica's log directory id, None when unset

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "log_end_offset": self.log_end_offset,
            "lag": self.lag,
            "last_fetch_ms_ago": self.last_fetch_ms_ago,
            "last_caught_up_ms_ago": self.last_caught_up_ms_ago,
            "directory_id": self.directory_id,
        }


@dataclass(frozen=True, slots=True)
class QuorumStatus:
    """The KRaft quorum of the cluster metadata log: who leads it and how far each replica is."""

    leader_id: int | None  # the active controller (None when -1)
    leader_epoch: int
    high_watermark: int
    voters: list[QuorumReplica]  # sorted by id
    observers: list[QuorumReplica]  # sorted by id
    # v2+: node id -> its listeners as "NAME://host:port" (empty for older versions)
    endpoints: dict[int, list[str]] = field(default_factory=dict)

    @property
    def leader(self) -> QuorumReplica | None:
        return next((v for v in self.voters if v.id == self.leader_id), None)

    @property
    def max_follower_lag(self) -> int | None:
        """Kafka's MaxFollowerLag: the leader's log end offset minus the furthest-behind voter's."""
        return max((v.lag for v in self.voters), default=None) if self.leader is not None else None

    @property
    def max_follower_lag_time_ms(self) -> int | None:
        """Kafka's MaxFollowerLagTimeMs: how long ago the furthest-behind voter was caught up,
        compared with the leader (0 when the leader is the furthest behind, -1 when unknown)."""
        leader = self.leader
        if leader is None or not self.voters:
            return None
        behind = min(self.voters, key=lambda v: (v.log_end_offset, v.id != leader.id))
        if behind.id == leader.id:
            return 0
        if behind.last_caught_up_ms_ago is None or leader.last_caught_up_ms_ago is None:
            return -1
        return behind.last_caught_up_ms_ago - leader.last_caught_up_ms_ago

    def to_json(self) -> dict[str, Any]:
        return {
            "leader_id": self.leader_id,
            "leader_epoch": self.leader_epoch,
            "high_watermark": self.high_watermark,
            "max_follower_lag": self.max_follower_lag,
            "max_follower_lag_time_ms": self.max_follower_lag_time_ms,
            "voters": [v.to_json() for v in self.voters],
            "observers": [o.to_json() for o in self.observers],
            "endpoints": {str(node): list(e) for node, e in sorted(self.endpoints.items())},
        }


def quorum_describe_lines(status: QuorumStatus) -> str:
    """What `kafka-metadata-quorum describe --status` prints for this status (without the
    ClusterId line, which DescribeQuorum does not carry)."""

    def number(value: int | None) -> str:
        return "-" if value is None else str(value)

    rows = [
        ("LeaderId", number(status.leader_id)),
        ("LeaderEpoch", str(status.leader_epoch)),
        ("HighWatermark", str(status.high_watermark)),
        ("MaxFollowerLag", number(status.max_follower_lag)),
        ("MaxFollowerLagTimeMs", number(status.max_follower_lag_time_ms)),
        ("CurrentVoters", _replica_list(status.voters, status.endpoints)),
        ("CurrentObservers", _replica_list(status.observers, status.endpoints)),
    ]
    return "\n".join(f"{name + ':':<24}{value}" for name, value in rows)


def _replica_list(replicas: list[QuorumReplica], endpoints: Mapping[int, list[str]]) -> str:
    """Kafka's rendering: [{"id": 1, "directoryId": "…", "endpoints": ["CONTROLLER://h:p"]}]."""
    parts = []
    for replica in replicas:
        text = f'{{"id": {replica.id}'
        if replica.directory_id is not None:
            text += f', "directoryId": {json.dumps(replica.directory_id)}'
        if endpoints.get(replica.id):
            text += f', "endpoints": [{", ".join(json.dumps(e) for e in endpoints[replica.id])}]'
        parts.append(text + "}")
    return "[" + ", ".join(parts) + "]"


# -- encoding ------------------------------------------------------------------------------------


def encode_unsigned_varint(value: int) -> bytes:
    """Kafka's UNSIGNED_VARINT: 7 bits a byte, least significant first, high bit = more."""
    if value < 0:
        raise ValueError(f"an unsigned varint cannot hold {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_compact_string(text: str | None) -> bytes:
    """COMPACT_(NULLABLE_)STRING: unsigned varint length + 1 (0 is null), then UTF-8 bytes."""
    if text is None:
        return encode_unsigned_varint(0)
    data = text.encode()
    return encode_unsigned_varint(len(data) + 1) + data


def encode_nullable_string(text: str | None) -> bytes:
    """NULLABLE_STRING: int16 length (-1 is null), then UTF-8 bytes (request headers' client id)."""
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def encode_api_versions_request(correlation_id: int, client_id: str = CLIENT_ID) -> bytes:
    """ApiVersions v0, framed: request header v1 (not flexible) and an empty body."""
    header = struct.pack(">hhi", API_VERSIONS, 0, correlation_id) + encode_nullable_string(
        client_id
    )
    return _frame(header)


def encode_describe_quorum_request(
    version: int, correlation_id: int, client_id: str = CLIENT_ID
) -> bytes:
    """DescribeQuorum at `version`, framed: request header v2 (flexible) and the body
    Topics [TopicName "__cluster_metadata", Partitions [PartitionIndex 0]] (the same in every
    version)."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"DescribeQuorum version {version} is not one this reader speaks")
    no_tags = encode_unsigned_varint(0)
    header = (
        struct.pack(">hhi", DESCRIBE_QUORUM, version, correlation_id)
        + encode_nullable_string(client_id)
        + no_tags
    )
    partition = struct.pack(">i", 0) + no_tags
    topic = (
        encode_compact_string(METADATA_TOPIC)
        + encode_unsigned_varint(1 + 1)  # compact array of one partition
        + partition
        + no_tags
    )
    body = encode_unsigned_varint(1 + 1) + topic + no_tags  # compact array of one topic
    return _frame(header + body)


# -- decoding ------------------------------------------------------------------------------------


class _Reader:
    """Reads Kafka's primitive types from a response body; MalformedResponse past its end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise MalformedResponse(
                f"truncated response: wanted {size} byte(s) at offset {self.pos} of "
                f"{len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def _unpack(self, fmt: str, size: int) -> int:
        return struct.unpack(fmt, self.take(size))[0]

    def int16(self) -> int:
        return self._unpack(">h", 2)

    def uint16(self) -> int:
        return self._unpack(">H", 2)

    def int32(self) -> int:
        return self._unpack(">i", 4)

    def int64(self) -> int:
        return self._unpack(">q", 8)

    def uuid(self) -> bytes:
        return self.take(16)

    def unsigned_varint(self) -> int:
        value = shift = 0
        while True:
            if shift > 28:
                raise MalformedResponse(f"varint longer than 5 bytes at offset {self.pos}")
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def compact_nullable_string(self) -> str | None:
        length = self.unsigned_varint()
        if length == 0:
            return None
        try:
            return self.take(length - 1).decode()
        except UnicodeDecodeError as exc:
            raise MalformedResponse(f"a string that is not UTF-8 ({exc})") from None

    def compact_string(self) -> str:
        text = self.compact_nullable_string()
        if text is None:
            raise MalformedResponse(f"null where a string belongs (offset {self.pos})")
        return text

    def compact_array_length(self) -> int:
        """Elements of a COMPACT_ARRAY (a null array reads as empty)."""
        return max(self.unsigned_varint() - 1, 0)

    def skip_tagged_fields(self) -> None:
        for _ in range(self.unsigned_varint()):
            self.unsigned_varint()  # tag
            self.take(self.unsigned_varint())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedResponse(
                f"{len(self.data) - self.pos} unread byte(s) after the response"
            )


def decode_unsigned_varint(data: bytes) -> tuple[int, int]:
    """(value, bytes used) of the UNSIGNED_VARINT at the start of `data`."""
    reader = _Reader(data)
    return reader.unsigned_varint(), reader.pos


def decode_compact_string(data: bytes) -> tuple[str | None, int]:
    """(text or None, bytes used) of the COMPACT_NULLABLE_STRING at the start of `data`."""
    reader = _Reader(data)
    return reader.compact_nullable_string(), reader.pos


def _check_correlation(reader: _Reader, expected: int) -> None:
    got = reader.int32()
    if got != expected:
        raise MalformedResponse(f"correlation id {got}, expected {expected}")


def decode_api_versions_response(
    payload: bytes, correlation_id: int
) -> tuple[int, dict[int, tuple[int, int]]]:
    """ApiVersions v0 (response header v0): (error code, api key -> (min, max) version).

    A broker that does not support the version asked for still answers in v0 with
    UNSUPPORTED_VERSION and its own list, which is all this reader needs.
    """
    reader = _Reader(payload)
    _check_correlation(reader, correlation_id)
    error = reader.int16()
    count = reader.int32()
    if count < 0 or count * 6 > len(payload):
        raise MalformedResponse(f"ApiVersions lists {count} api keys")
    versions = {}
    for _ in range(count):
        key, low, high = struct.unpack(">hhh", reader.take(6))
        versions[key] = (low, high)
    # Newer versions append fields (throttle time, tagged fields) a v0 reader leaves unread.
    return error, versions


def pick_describe_quorum_version(versions: Mapping[int, tuple[int, int]]) -> int | None:
    """The highest DescribeQuorum version both the broker and this reader speak; None if none."""
    if DESCRIBE_QUORUM not in versions:
        return None
    low, high = versions[DESCRIBE_QUORUM]
    common = [v for v in SUPPORTED_VERSIONS if low <= v <= high]
    return max(common) if common else None


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """ReplicaState as sent: timestamps are the leader's wall clock in ms (-1: unknown)."""

    replica_id: int
    directory_id: bytes | None  # v2+
    log_end_offset: int
    last_fetch_timestamp: int  # v1+, -1 before
    last_caught_up_timestamp: int  # v1+, -1 before


@dataclass(frozen=True, slots=True)
class PartitionData:
    partition_index: int
    error_code: int
    error_message: str | None
    leader_id: int
    leader_epoch: int
    high_watermark: int
    current_voters: list[ReplicaState]
    observers: list[ReplicaState]


@dataclass(frozen=True, slots=True)
class DescribeQuorumResponse:
    """A decoded DescribeQuorum response, field for field."""

    version: int
    error_code: int
    error_message: str | None
    topics: dict[str, list[PartitionData]]
    nodes: dict[int, list[tuple[str, str, int]]]  # v2+: node id -> [(listener, host, port)]


def decode_describe_quorum_response(
    payload: bytes, version: int, correlation_id: int
) -> DescribeQuorumResponse:
    """A DescribeQuorum response body at `version` (response header v1 first)."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"DescribeQuorum version {version} is not one this reader speaks")
    reader = _Reader(payload)
    _check_correlation(reader, correlation_id)
    reader.skip_tagged_fields()
    error_code = reader.int16()
    error_message = reader.compact_nullable_string() if version >= 2 else None
    topics: dict[str, list[PartitionData]] = {}
    for _ in range(reader.compact_array_length()):
        name = reader.compact_string()
        partitions = [
            _decode_partition(reader, version) for _ in range(reader.compact_array_length())
        ]
        reader.skip_tagged_fields()
        topics[name] = partitions
    nodes: dict[int, list[tuple[str, str, int]]] = {}
    if version >= 2:
        for _ in range(reader.compact_array_length()):
            node_id = reader.int32()
            listeners = []
            for _ in range(reader.compact_array_length()):
                listener = (reader.compact_string(), reader.compact_string(), reader.uint16())
                reader.skip_tagged_fields()
                listeners.append(listener)
            reader.skip_tagged_fields()
            nodes[node_id] = listeners
    reader.skip_tagged_fields()
    reader.end()
    return DescribeQuorumResponse(version, error_code, error_message, topics, nodes)


def _decode_partition(reader: _Reader, version: int) -> PartitionData:
    index = reader.int32()
    error_code = reader.int16()
    error_message = reader.compact_nullable_string() if version >= 2 else None
    leader_id = reader.int32()
    leader_epoch = reader.int32()
    high_watermark = reader.int64()
    voters = [_decode_replica(reader, version) for _ in range(reader.compact_array_length())]
    observers = [_decode_replica(reader, version) for _ in range(reader.compact_array_length())]
    reader.skip_tagged_fields()
    return PartitionData(
        index, error_code, error_message, leader_id, leader_epoch, high_watermark, voters, observers
    )


def _decode_replica(reader: _Reader, version: int) -> ReplicaState:
    replica_id = reader.int32()
    directory_id = reader.uuid() if version >= 2 else None
    log_end_offset = reader.int64()
    last_fetch = last_caught_up = -1
    if version >= 1:
        last_fetch = reader.int64()
        last_caught_up = reader.int64()
    reader.skip_tagged_fields()
    return ReplicaState(replica_id, directory_id, log_end_offset, last_fetch, last_caught_up)


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"error code {code}")


class _Refused(Exception):
    """A broker answered DescribeQuorum with an error code."""

    def __init__(self, code: int, message: str | None) -> None:
        text = error_name(code) + (f" ({message})" if message else "")
        super().__init__(text)
        self.code = code


def quorum_status(response: DescribeQuorumResponse, now_ms: int) -> QuorumStatus:
    """The QuorumStatus of a decoded response, `now_ms` being the wall clock in ms.

    Raises QuorumUnavailable for an error code (top level or the partition's) or an answer
    without partition 0 of `__cluster_metadata`.
    """
    try:
        return _status(response, now_ms)
    except _Refused as exc:
        raise QuorumUnavailable(f"broker refused DescribeQuorum: {exc}") from None


def _status(response: DescribeQuorumResponse, now_ms: int) -> QuorumStatus:
    if response.error_code != 0:
        raise _Refused(response.error_code, response.error_message)
    partition = next(
        (p for p in response.topics.get(METADATA_TOPIC, []) if p.partition_index == 0), None
    )
    if partition is None:
        raise MalformedResponse(f"the answer has no {METADATA_TOPIC} partition 0")
    if partition.error_code != 0:
        raise _Refused(partition.error_code, partition.error_message)
    by_id = {v.replica_id: v for v in partition.current_voters}
    leader = by_id.get(partition.leader_id)
    if leader is not None:
        reference = leader.log_end_offset
    else:  # no leader known: measure against the furthest voter
        reference = max((v.log_end_offset for v in partition.current_voters), default=0)

    def replica(state: ReplicaState) -> QuorumReplica:
        return QuorumReplica(
            id=state.replica_id,
            log_end_offset=state.log_end_offset,
            lag=max(reference - max(state.log_end_offset, 0), 0),
            last_fetch_ms_ago=_ago(state.last_fetch_timestamp, now_ms),
            last_caught_up_ms_ago=_ago(state.last_caught_up_timestamp, now_ms),
            directory_id=_uuid_text(state.directory_id),
        )

    return QuorumStatus(
        leader_id=None if partition.leader_id < 0 else partition.leader_id,
        leader_epoch=partition.leader_epoch,
        high_watermark=partition.high_watermark,
        voters=sorted(map(replica, partition.current_voters), key=lambda r: r.id),
        observers=sorted(map(replica, partition.observers), key=lambda r: r.id),
        endpoints={
            node: [f"{name}://{_host(host)}:{port}" for name, host, port in listeners]
            for node, listeners in sorted(response.nodes.items())
        },
    )


def _ago(timestamp_ms: int, now_ms: int) -> int | None:
    return None if timestamp_ms < 0 else max(now_ms - timestamp_ms, 0)


def _uuid_text(raw: bytes | None) -> str | None:
    """Kafka's Uuid.toString (URL-safe base64, no padding); None for none or the zero uuid."""
    if raw is None or raw == _ZERO_UUID:
        return None
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- the socket side -----------------------------------------------------------------------------


def bootstrap_addresses(servers: str) -> list[tuple[str, int]]:
    """(host, port) of each comma-separated bootstrap server; `PROTO://` prefixes and `[v6]`
    brackets are understood, a missing port is 9092."""
    addresses = []
    for item in servers.split(","):
        item = item.strip()
        if not item:
            continue
        item = item.split("://", 1)[-1]
        host, port = item, 9092
        if item.startswith("["):  # [::1]:9092
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 9092
        elif item.count(":") == 1:
            head, _, tail = item.partition(":")
            if tail.isdigit():
                host, port = head, int(tail)
        addresses.append((host, port))
    return addresses


def describe_quorum(settings: Settings, *, timeout: float = 5.0) -> QuorumStatus:
    """The controller quorum, from the first bootstrap broker that answers, within `timeout`
    seconds in all. Raises QuorumUnavailable (one line) when it cannot be read."""
    protocol = (settings.kafka_options.get("security.protocol") or "plaintext").strip()
    if protocol.lower() != "plaintext":
        raise QuorumUnavailable(
            f"the cluster needs {protocol.upper()} (KAFKA_SECURITY_PROTOCOL), which this "
            "reader does not speak: it reads the quorum over PLAINTEXT only"
        )
    addresses = bootstrap_addresses(settings.kafka_bootstrap_servers)
    if not addresses:
        raise QuorumUnavailable("no bootstrap server is configured (KAFKA_BOOTSTRAP_SERVERS)")
    deadline = clock.monotonic() + timeout
    failures: list[str] = []
    refusal: str | None = None
    for n, (host, port) in enumerate(addresses):
        where = f"{_host(host)}:{port}"
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            failures.append(f"{where} (not tried: out of time)")
            continue
        # An equal share of what is left for each address still to try, so one that hangs
        # leaves time for the next (a refused connection costs nothing, and its share goes to
        # the rest); at least half a second each, as time allows.
        budget = max(remaining / (len(addresses) - n), min(remaining, _MIN_ATTEMPT))
        try:
            response = _ask(host, port, budget)
            return _status(response, _now_ms())
        except _Refused as exc:
            refusal = f"the broker at {where} refused DescribeQuorum: {exc}"
            if exc.code in _FINAL_ERRORS:
                break
            failures.append(f"{where} ({exc})")
        except QuorumUnavailable as exc:
            failures.append(f"{where} ({exc})")
        except MalformedResponse as exc:
            failures.append(f"{where} (an answer this reader cannot read: {exc})")
        except ConnectionRefusedError:
            failures.append(f"{where} (connection refused)")
        except TimeoutError:  # socket.timeout is TimeoutError
            failures.append(f"{where} (timed out)")
        except _ConnectionClosed:
            failures.append(
                f"{where} (closed the connection: a SASL or SSL listener? this reader speaks "
                "PLAINTEXT only)"
            )
        except socket.gaierror:
            failures.append(f"{where} (unknown host)")
        except OSError as exc:
            failures.append(f"{where} ({exc.strerror or exc})")
    if refusal is not None:
        raise QuorumUnavailable(refusal)
    raise QuorumUnavailable("no broker answered DescribeQuorum at " + ", ".join(failures))


def _now_ms() -> int:
    return int(clock.utcnow().timestamp() * 1000)


def _ask(host: str, port: int, budget: float) -> DescribeQuorumResponse:
    """ApiVersions, then DescribeQuorum at the best common version, on one connection."""
    deadline = clock.monotonic() + budget
    with socket.create_connection((host, port), timeout=budget) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = _exchange(sock, encode_api_versions_request(1), deadline)
        error, versions = decode_api_versions_response(payload, 1)
        if error not in (0, 35) and not versions:
            raise _Refused(error, "ApiVersions")
        version = pick_describe_quorum_version(versions)
        if version is None:
            supported = versions.get(DESCRIBE_QUORUM)
            raise QuorumUnavailable(
                "the broker does not support DescribeQuorum (not a KRaft cluster?)"
                if supported is None
                else f"the broker speaks DescribeQuorum v{supported[0]}-v{supported[1]} only"
            )
        payload = _exchange(sock, encode_describe_quorum_request(version, 2), deadline)
        return decode_describe_quorum_response(payload, version, 2)


def _exchange(sock: socket.socket, request: bytes, deadline: float) -> bytes:
    _settimeout(sock, deadline)
    sock.sendall(request)
    (size,) = struct.unpack(">i", _receive(sock, 4, deadline))
    if not 4 <= size <= _MAX_FRAME:
        raise MalformedResponse(f"a response of {size} bytes")
    return _receive(sock, size, deadline)


def _receive(sock: socket.socket, size: int, deadline: float) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        _settimeout(sock, deadline)
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise _ConnectionClosed("the broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _settimeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - clock.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    sock.settimeout(remaining)
