"""The real Kafka broker with the real client: keys, headers, partitions, groups."""

from confluent_kafka import TopicPartition

from pipeline.core.partitioner import partition_for_key
from pipeline.kafka.clients import kafka_consumer, kafka_producer


def test_produce_and_consume_keeps_key_headers_and_partition(settings, topic, group):
    keys = [f"task-{i}".encode() for i in range(12)]
    delivered = {}

    def on_delivery(err, msg):
        assert err is None, err
        delivered[msg.key()] = (msg.partition(), msg.offset())

    producer = kafka_producer(settings)
    for key in keys:
        producer.produce(
            topic,
            key=key,
            value=b'{"n": "' + key + b'"}',
            headers=[("event_id", key), ("content-type", b"application/json")],
            on_delivery=on_delivery,
        )
    assert producer.flush(30) == 0
    assert len(delivered) == len(keys)
    # murmur2_random puts each key where Kafka's Java clients would.
    for key, (partition, _) in delivered.items():
        assert partition == partition_for_key(key, 6)
    assert len({p for p, _ in delivered.values()}) > 1

    consumer = kafka_consumer(settings, group)
    consumer.subscribe([topic])
    seen = {}
    try:
        for _ in range(60):
            for msg in consumer.consume(num_messages=50, timeout=1.0):
                assert msg.error() is None, msg.error()
                seen[msg.key()] = msg
            if len(seen) == len(keys):
                break
        assert set(seen) == set(keys)
        msg = seen[b"task-3"]
        assert msg.value() == b'{"n": "task-3"}'
        assert msg.headers() == [("event_id", b"task-3"), ("content-type", b"application/json")]
        assert (msg.partition(), msg.offset()) == delivered[b"task-3"]
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
        assert sum(tp.offset for tp in committed if tp.offset >= 0) == len(keys)
    finally:
        consumer.close()
