"""The DescribeQuorum reader's wire format (pipeline/kafka/quorum.py), checked on byte strings
built here, and its socket side against tiny loopback servers (no Kafka)."""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaError

from pipeline.core.settings import Settings
from pipeline.kafka import quorum as q
from pipeline.kafka.quorum import (
    MalformedResponse,
    QuorumReplica,
    QuorumStatus,
    QuorumUnavailable,
    bootstrap_addresses,
    decode_api_versions_response,
    decode_compact_string,
    decode_describe_quorum_response,
    decode_unsigned_varint,
    describe_quorum,
    encode_api_versions_request,
    encode_compact_string,
    encode_describe_quorum_request,
    encode_nullable_string,
    encode_unsigned_varint,
    pick_describe_quorum_version,
    quorum_describe_lines,
    quorum_status,
)

NOW = 1_800_000_000_000  # the wall clock the tests decode at, in ms

# -- primitives ------------------------------------------------------------------------------

VARINTS = [
    (0, b"\x00"),
    (1, b"\x01"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (300, b"\xac\x02"),
    (16_384, b"\x80\x80\x01"),
    (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINTS)
def test_unsigned_varints_both_ways(value, encoded):
    assert encode_unsigned_varint(value) == encoded
    assert decode_unsigned_varint(encoded + b"rest") == (value, len(encoded))


def test_a_negative_varint_or_one_that_never_ends_is_refused():
    with pytest.raises(ValueError):
        encode_unsigned_varint(-1)
    with pytest.raises(MalformedResponse, match="longer than 5 bytes"):
        decode_unsigned_varint(b"\xff" * 6)
    with pytest.raises(MalformedResponse, match="truncated"):
        decode_unsigned_varint(b"\x80")


@pytest.mark.parametrize(
    ("text", "encoded"),
    [(None, b"\x00"), ("", b"\x01"), ("abc", b"\x04abc"), ("é", b"\x03\xc3\xa9")],
)
def test_compact_strings_both_ways(text, encoded):
    assert encode_compact_string(text) == encoded
    assert decode_compact_string(encoded) == (text, len(encoded))


def test_nullable_strings_carry_an_int16_length():
    assert encode_nullable_string(None) == b"\xff\xff"
    assert encode_nullable_string("ab") == b"\x00\x02ab"


def test_a_compact_string_longer_than_the_bytes_is_truncated():
    with pytest.raises(MalformedResponse, match="truncated"):
        decode_compact_string(b"\x05ab")


# -- requests --------------------------------------------------------------------------------


def test_api_versions_v0_request_bytes():
    body = (
        b"\x00\x12"  # api key 18
        b"\x00\x00"  # version 0
        b"\x00\x00\x00\x07"  # correlation id
        b"\x00\x03abc"  # client id, int16 length
    )
    assert encode_api_versions_request(7, "abc") == struct.pack(">i", len(body)) + body


@pytest.mark.parametrize("version", [0, 1, 2])
def test_describe_quorum_request_bytes(version):
    body = (
        b"\x00\x37"  # api key 55
        + struct.pack(">h", version)
        + b"\x00\x00\x00\x2a"  # correlation id 42
        + b"\x00\x03abc"  # client id (request header v2 keeps the int16 length)
        + b"\x00"  # header tagged fields
        + b"\x02"  # Topics: compact array of 1
        + b"\x13__cluster_metadata"  # compact string, 18 bytes + 1
        + b"\x02"  # Partitions: compact array of 1
        + b"\x00\x00\x00\x00\x00"  # PartitionIndex 0, partition tagged fields
        + b"\x00"  # topic tagged fields
        + b"\x00"  # body tagged fields
    )
    assert encode_describe_quorum_request(version, 42, "abc") == struct.pack(">i", len(body)) + body


def test_a_version_the_reader_does_not_speak_is_refused():
    with pytest.raises(ValueError):
        encode_describe_quorum_request(3, 1)
    with pytest.raises(ValueError):
        decode_describe_quorum_response(b"", 3, 1)


# -- ApiVersions -----------------------------------------------------------------------------


def api_versions_response(correlation_id: int, keys: dict[int, tuple[int, int]], error=0):
    body = struct.pack(">ihi", correlation_id, error, len(keys))
    for key, (low, high) in keys.items():
        body += struct.pack(">hhh", key, low, high)
    return body


def test_api_versions_response_decodes():
    payload = api_versions_response(3, {18: (0, 4), 55: (0, 2), 3: (0, 13)})
    error, versions = decode_api_versions_response(payload, 3)
    assert error == 0
    assert versions == {18: (0, 4), 55: (0, 2), 3: (0, 13)}


def test_api_versions_wrong_correlation_id_is_malformed():
    with pytest.raises(MalformedResponse, match="correlation id 4, expected 3"):
        decode_api_versions_response(api_versions_response(4, {}), 3)


@pytest.mark.parametrize(
    ("broker", "picked"),
    [((0, 0), 0), ((0, 1), 1), ((0, 2), 2), ((0, 7), 2), ((1, 2), 2), ((3, 4), None)],
)
def test_the_highest_common_version_is_picked(broker, picked):
    assert pick_describe_quorum_version({55: broker}) == picked


def test_a_broker_without_describe_quorum_has_no_version():
    assert pick_describe_quorum_version({18: (0, 4)}) is None


# -- DescribeQuorum responses, built field by field -------------------------------------------


def uvarint(n: int) -> bytes:
    return encode_unsigned_varint(n)


def cstr(text: str | None) -> bytes:
    return encode_compact_string(text)


def carray(items: list[bytes]) -> bytes:
    return uvarint(len(items) + 1) + b"".join(items)


NO_TAGS = b"\x00"


def replica(version, rid, leo, fetch=-1, caught_up=-1, directory=bytes(16)) -> bytes:
    out = struct.pack(">i", rid)
    if version >= 2:
        out += directory
    out += struct.pack(">q", leo)
    if version >= 1:
        out += struct.pack(">qq", fetch, caught_up)
    return out + NO_TAGS


def partition(version, *, voters, observers=(), leader=1, epoch=5, hwm=1000, error=0,
              message=None, tags=NO_TAGS) -> bytes:  # fmt: skip
    out = struct.pack(">ih", 0, error)
    if version >= 2:
        out += cstr(message)
    out += struct.pack(">iiq", leader, epoch, hwm)
    return out + carray(list(voters)) + carray(list(observers)) + tags


def response(version, partitions, *, correlation_id=9, error=0, message=None, nodes=(),
             topic="__cluster_metadata") -> bytes:  # fmt: skip
    out = struct.pack(">i", correlation_id) + NO_TAGS  # response header v1
    out += struct.pack(">h", error)
    if version >= 2:
        out += cstr(message)
    out += carray([cstr(topic) + carray(list(partitions)) + NO_TAGS])
    if version >= 2:
        out += carray(list(nodes))
    return out + NO_TAGS


def node(node_id: int, *listeners: tuple[str, str, int]) -> bytes:
    return (
        struct.pack(">i", node_id)
        + carray([cstr(n) + cstr(h) + struct.pack(">H", p) + NO_TAGS for n, h, p in listeners])
        + NO_TAGS
    )


def test_a_v0_response_decodes_into_a_status():
    payload = response(
        0,
        [
            partition(
                0,
                leader=1,
                epoch=7,
                hwm=990,
                voters=[replica(0, 2, 980), replica(0, 1, 1000), replica(0, 0, 1000)],
                observers=[replica(0, 5, -1)],
            )
        ],
    )
    decoded = decode_describe_quorum_response(payload, 0, 9)
    assert decoded.error_code == 0 and decoded.error_message is None and decoded.nodes == {}
    [part] = decoded.topics["__cluster_metadata"]
    assert (part.leader_id, part.leader_epoch, part.high_watermark) == (1, 7, 990)
    assert [
        (v.replica_id, v.log_end_offset, v.last_fetch_timestamp) for v in part.current_voters
    ] == [
        (2, 980, -1),
        (1, 1000, -1),
        (0, 1000, -1),
    ]

    status = quorum_status(decoded, NOW)
    assert status == QuorumStatus(
        leader_id=1,
        leader_epoch=7,
        high_watermark=990,
        voters=[
            QuorumReplica(0, 1000, 0, None, None),
            QuorumReplica(1, 1000, 0, None, None),
            QuorumReplica(2, 980, 20, None, None),
        ],
        observers=[QuorumReplica(5, -1, 1000, None, None)],  # unknown offset: all of it behind
    )
    assert status.max_follower_lag == 20
    assert status.max_follower_lag_time_ms == -1  # v0 carries no timestamps


def test_a_v1_response_gives_fetch_and_caught_up_times():
    payload = response(
        1,
        [
            partition(
                1,
                voters=[
                    replica(1, 1, 1000, fetch=NOW, caught_up=NOW),
                    replica(1, 0, 990, fetch=NOW - 120, caught_up=NOW - 4500),
                    replica(1, 2, 1000, fetch=-1, caught_up=-1),
                ],
            )
        ],
    )
    status = quorum_status(decode_describe_quorum_response(payload, 1, 9), NOW)
    assert status.voters == [
        QuorumReplica(0, 990, 10, 120, 4500),
        QuorumReplica(1, 1000, 0, 0, 0),
        QuorumReplica(2, 1000, 0, None, None),
    ]
    assert status.max_follower_lag == 10
    assert status.max_follower_lag_time_ms == 4500  # as Kafka: leader's minus the follower's


DIR_0 = bytes(range(16))
DIR_1 = bytes(range(16, 32))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def v2_payload(correlation_id: int = 9, **partition_args) -> bytes:
    # An unknown tagged field (tag 0, 8 bytes) on the partition: skipped, as Kafka's are.
    tagged = uvarint(1) + uvarint(0) + uvarint(8) + struct.pack(">q", NOW)
    args = {
        "voters": [
            replica(2, 0, 1000, fetch=NOW - 50, caught_up=NOW - 50, directory=DIR_0),
            replica(2, 1, 1000, fetch=NOW, caught_up=NOW, directory=DIR_1),
            replica(2, 2, 400, fetch=NOW - 15_000, caught_up=NOW - 20_000),
        ],
        "observers": [replica(2, 3, 999, fetch=NOW - 10, caught_up=NOW - 10)],
        "message": "",
        "tags": tagged,
    } | partition_args
    return response(
        2,
        [partition(2, **args)],
        correlation_id=correlation_id,
        message=None,
        nodes=[
            node(1, ("CONTROLLER", "127.0.0.1", 19103)),
            node(0, ("CONTROLLER", "127.0.0.1", 19093)),
            node(2, ("CONTROLLER", "::1", 19113), ("OTHER", "h2", 7)),
        ],
    )


def test_a_v2_response_with_directories_nodes_and_tagged_fields():
    decoded = decode_describe_quorum_response(v2_payload(), 2, 9)
    assert decoded.nodes[2] == [("CONTROLLER", "::1", 19113), ("OTHER", "h2", 7)]
    [part] = decoded.topics["__cluster_metadata"]
    assert part.error_message == ""
    assert part.current_voters[0].directory_id == DIR_0

    status = quorum_status(decoded, NOW)
    assert status.leader_id == 1
    assert [v.id for v in status.voters] == [0, 1, 2]
    assert status.voters[0] == QuorumReplica(0, 1000, 0, 50, 50, b64(DIR_0))
    assert status.voters[2] == QuorumReplica(2, 400, 600, 15_000, 20_000, None)  # zero uuid
    assert status.observers == [QuorumReplica(3, 999, 1, 10, 10, None)]
    assert status.endpoints == {
        0: ["CONTROLLER://127.0.0.1:19093"],
        1: ["CONTROLLER://127.0.0.1:19103"],
        2: ["CONTROLLER://[::1]:19113", "OTHER://h2:7"],
    }
    assert status.max_follower_lag == 600
    assert status.max_follower_lag_time_ms == 20_000

    assert quorum_describe_lines(status) == "\n".join(
        [
            "LeaderId:               1",
            "LeaderEpoch:            5",
            "HighWatermark:          1000",
            "MaxFollowerLag:         600",
            "MaxFollowerLagTimeMs:   20000",
            f'CurrentVoters:          [{{"id": 0, "directoryId": "{b64(DIR_0)}", "endpoints": '
            f'["CONTROLLER://127.0.0.1:19093"]}}, {{"id": 1, "directoryId": "{b64(DIR_1)}", '
            f'"endpoints": ["CONTROLLER://127.0.0.1:19103"]}}, {{"id": 2, "endpoints": '
            '["CONTROLLER://[::1]:19113", "OTHER://h2:7"]}]',
            'CurrentObservers:       [{"id": 3}]',
        ]
    )
    assert status.to_json() == {
        "leader_id": 1,
        "leader_epoch": 5,
        "high_watermark": 1000,
        "max_follower_lag": 600,
        "max_follower_lag_time_ms": 20_000,
        "voters": [
            {"id": 0, "log_end_offset": 1000, "lag": 0, "last_fetch_ms_ago": 50,
             "last_caught_up_ms_ago": 50, "directory_id": b64(DIR_0)},
            {"id": 1, "log_end_offset": 1000, "lag": 0, "last_fetch_ms_ago": 0,
             "last_caught_up_ms_ago": 0, "directory_id": b64(DIR_1)},
            {"id": 2, "log_end_offset": 400, "lag": 600, "last_fetch_ms_ago": 15_000,
             "last_caught_up_ms_ago": 20_000, "directory_id": None},
        ],
        "observers": [
            {"id": 3, "log_end_offset": 999, "lag": 1, "last_fetch_ms_ago": 10,
             "last_caught_up_ms_ago": 10, "directory_id": None},
        ],
        "endpoints": {
            "0": ["CONTROLLER://127.0.0.1:19093"],
            "1": ["CONTROLLER://127.0.0.1:19103"],
            "2": ["CONTROLLER://[::1]:19113", "OTHER://h2:7"],
        },
    }  # fmt: skip


def test_a_quorum_without_leader():
    payload = response(0, [partition(0, leader=-1, voters=[replica(0, 0, 10), replica(0, 1, 7)])])
    status = quorum_status(decode_describe_quorum_response(payload, 0, 9), NOW)
    assert status.leader_id is None
    assert [v.lag for v in status.voters] == [0, 3]  # measured against the furthest voter
    assert status.max_follower_lag is None
    assert quorum_describe_lines(status).splitlines()[0] == "LeaderId:               -"


def test_a_leader_that_is_furthest_behind_has_no_lag_time():
    payload = response(1, [partition(1, voters=[replica(1, 1, 10, NOW, NOW), replica(1, 2, 10, NOW - 5, NOW - 5)])])  # fmt: skip
    status = quorum_status(decode_describe_quorum_response(payload, 1, 9), NOW)
    assert status.max_follower_lag == 0
    assert status.max_follower_lag_time_ms == 0


# -- errors in the answer --------------------------------------------------------------------


def test_a_top_level_error_is_refused_by_name():
    payload = response(0, [], error=31)
    with pytest.raises(QuorumUnavailable, match=r"^broker refused DescribeQuorum: CLUSTER_AUTHORIZATION_FAILED$"):  # fmt: skip
        quorum_status(decode_describe_quorum_response(payload, 0, 9), NOW)


def test_a_v2_top_level_error_carries_its_message():
    payload = response(2, [], error=31, message="denied by ACL")
    with pytest.raises(QuorumUnavailable, match=r"CLUSTER_AUTHORIZATION_FAILED \(denied by ACL\)"):
        quorum_status(decode_describe_quorum_response(payload, 2, 9), NOW)


def test_a_partition_error_is_refused():
    payload = v2_payload(error=6, message="not the leader")
    with pytest.raises(QuorumUnavailable, match=r"NOT_LEADER_OR_FOLLOWER \(not the leader\)"):
        quorum_status(decode_describe_quorum_response(payload, 2, 9), NOW)


def test_an_unknown_error_code_is_shown_as_a_number():
    payload = response(0, [], error=999)
    with pytest.raises(QuorumUnavailable, match="error code 999"):
        quorum_status(decode_describe_quorum_response(payload, 0, 9), NOW)


def test_an_answer_without_the_metadata_partition_is_malformed():
    payload = response(0, [partition(0, voters=[])], topic="other")
    with pytest.raises(MalformedResponse, match="__cluster_metadata partition 0"):
        quorum_status(decode_describe_quorum_response(payload, 0, 9), NOW)


def test_error_names_are_kafkas():
    # The codes are Kafka's; librdkafka spells three of the names its own way.
    librdkafka = {
        "UNKNOWN_SERVER_ERROR": "UNKNOWN",
        "NOT_LEADER_OR_FOLLOWER": "NOT_LEADER_FOR_PARTITION",
        "UNKNOWN_TOPIC_OR_PARTITION": "UNKNOWN_TOPIC_OR_PART",
    }
    for code, name in q.ERROR_NAMES.items():
        if code != 0:
            assert getattr(KafkaError, librdkafka.get(name, name)) == code, name


@pytest.mark.parametrize("cut", [5, 20, 60, -1])
def test_a_truncated_response_is_malformed(cut):
    with pytest.raises(MalformedResponse, match="truncated"):
        decode_describe_quorum_response(v2_payload()[:cut], 2, 9)


def test_trailing_bytes_or_a_wrong_correlation_id_are_malformed():
    with pytest.raises(MalformedResponse, match="unread"):
        decode_describe_quorum_response(v2_payload() + b"\x00", 2, 9)
    with pytest.raises(MalformedResponse, match="correlation id 9, expected 10"):
        decode_describe_quorum_response(v2_payload(), 2, 10)


def test_a_v2_answer_read_as_v0_does_not_pass_silently():
    with pytest.raises(MalformedResponse):
        decode_describe_quorum_response(v2_payload(), 0, 9)


# -- the socket side -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "addresses"),
    [
        ("127.0.0.1:9092", [("127.0.0.1", 9092)]),
        (" a:1 , b:2,,", [("a", 1), ("b", 2)]),
        ("PLAINTEXT://h:9", [("h", 9)]),
        ("[::1]:9093,host", [("::1", 9093), ("host", 9092)]),
    ],
)
def test_bootstrap_addresses(servers, addresses):
    assert bootstrap_addresses(servers) == addresses


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "ssl", "SASL_SSL"])
def test_a_secured_cluster_is_refused_without_a_connection(protocol):
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1", kafka_options={"security.protocol": protocol}
    )
    with pytest.raises(QuorumUnavailable, match=f"needs {protocol.upper()}.*PLAINTEXT only"):
        describe_quorum(settings)


def test_plaintext_spelled_out_is_fine(monkeypatch):
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1", kafka_options={"security.protocol": "PLAINTEXT"}
    )
    with pytest.raises(QuorumUnavailable, match="no broker answered"):
        describe_quorum(settings, timeout=1)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start a loopback server whose connections `handler` serves; its port."""
    servers: list[socket.socket] = []

    def start(handler: Callable[[socket.socket], None]) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def loop() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn, contextlib.suppress(OSError):
                    handler(conn)

        threading.Thread(target=loop, daemon=True).start()
        return server.getsockname()[1]

    yield start
    for server in servers:
        server.close()


def _read_request(conn: socket.socket) -> tuple[int, int, int]:
    """(api key, version, correlation id) of the next framed request."""
    size = struct.unpack(">i", conn.recv(4, socket.MSG_WAITALL))[0]
    data = conn.recv(size, socket.MSG_WAITALL)
    return struct.unpack(">hhi", data[:8])


def fake_broker(describe_versions=(0, 2), payload_for=None):
    """A broker answering ApiVersions v0 and DescribeQuorum with `payload_for(version, cid)`."""

    def handler(conn: socket.socket) -> None:
        key, version, cid = _read_request(conn)
        assert (key, version) == (18, 0)
        answer = api_versions_response(cid, {18: (0, 4), 55: describe_versions})
        conn.sendall(struct.pack(">i", len(answer)) + answer)
        key, version, cid = _read_request(conn)
        assert key == 55
        answer = payload_for(version, cid)
        conn.sendall(struct.pack(">i", len(answer)) + answer)

    return handler


def test_describe_quorum_asks_the_first_broker_that_answers(serve):
    seen = []

    def payload_for(version, cid):
        seen.append(version)
        return v2_payload(cid)

    port = serve(fake_broker((0, 5), payload_for))
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()},127.0.0.1:{port}")
    status = describe_quorum(settings, timeout=3)
    assert seen == [2]  # the highest both speak
    assert status.leader_id == 1
    assert status.endpoints[0] == ["CONTROLLER://127.0.0.1:19093"]


def test_an_older_broker_is_asked_in_its_version(serve):
    def payload_for(version, cid):
        assert version == 1
        return response(1, [partition(1, voters=[replica(1, 1, 5, -1, -1)])], correlation_id=cid)

    port = serve(fake_broker((0, 1), payload_for))
    status = describe_quorum(Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}"))
    assert status.voters == [QuorumReplica(1, 5, 0, None, None)]


def test_an_authorization_error_ends_the_call(serve):
    asked = []

    def payload_for(version, cid):
        asked.append(cid)
        return response(version, [], correlation_id=cid, error=31)

    a = serve(fake_broker((0, 2), payload_for))
    b = serve(fake_broker((0, 2), payload_for))
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{a},127.0.0.1:{b}")
    with pytest.raises(QuorumUnavailable) as caught:
        describe_quorum(settings)
    assert str(caught.value) == (
        f"the broker at 127.0.0.1:{a} refused DescribeQuorum: CLUSTER_AUTHORIZATION_FAILED"
    )
    assert len(asked) == 1  # the other broker would say the same


def test_a_broker_without_describe_quorum_is_said(serve):
    def handler(conn):
        _, _, cid = _read_request(conn)
        answer = api_versions_response(cid, {18: (0, 4)})
        conn.sendall(struct.pack(">i", len(answer)) + answer)

    port = serve(handler)
    with pytest.raises(QuorumUnavailable, match="does not support DescribeQuorum"):
        describe_quorum(Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}"))


def test_a_listener_that_closes_the_connection_suggests_sasl_or_ssl(serve):
    port = serve(lambda conn: conn.recv(1024))
    with pytest.raises(QuorumUnavailable, match="closed the connection: a SASL or SSL listener"):
        describe_quorum(Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}"))


def test_refused_and_hanging_brokers_end_within_the_timeout(serve):
    release = threading.Event()
    hanging = serve(lambda conn: release.wait(10))
    refused = _closed_port()
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{refused},127.0.0.1:{hanging}")
    started = time.monotonic()
    try:
        with pytest.raises(QuorumUnavailable) as caught:
            describe_quorum(settings, timeout=1.0)
    finally:
        release.set()
    assert time.monotonic() - started < 1.5
    assert str(caught.value) == (
        f"no broker answered DescribeQuorum at 127.0.0.1:{refused} (connection refused), "
        f"127.0.0.1:{hanging} (timed out)"
    )


def test_a_hanging_broker_leaves_time_for_the_next(serve):
    release = threading.Event()
    hanging = serve(lambda conn: release.wait(10))

    def payload_for(version, cid):
        return response(0, [partition(0, voters=[replica(0, 1, 5)])], correlation_id=cid)

    good = serve(fake_broker((0, 0), payload_for))
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{hanging},127.0.0.1:{good}")
    started = time.monotonic()
    try:
        assert describe_quorum(settings, timeout=2.0).leader_id == 1
    finally:
        release.set()
    assert time.monotonic() - started < 2.0


def test_two_hanging_brokers_still_leave_time_for_a_third(serve):
    release = threading.Event()
    first, second = serve(lambda conn: release.wait(10)), serve(lambda conn: release.wait(10))

    def payload_for(version, cid):
        return response(0, [partition(0, voters=[replica(0, 2, 5)], leader=2)], correlation_id=cid)

    good = serve(fake_broker((0, 0), payload_for))
    servers = ",".join(f"127.0.0.1:{p}" for p in (first, second, good))
    started = time.monotonic()
    try:
        assert (
            describe_quorum(Settings(kafka_bootstrap_servers=servers), timeout=3.0).leader_id == 2
        )
    finally:
        release.set()
    assert time.monotonic() - started < 3.0
