"""How a replay worker sizes its batches at an `Nx` pace (pure: no services, no sleeping)."""

from pipeline.replay.worker import ReplayWorker


def paced(speed: str, batch_size: int = 2_000) -> ReplayWorker:
    worker = ReplayWorker(None, None, "pace", batch_size=batch_size)  # type: ignore[arg-type]
    worker._apply_speed(speed)
    return worker


def test_the_first_batch_is_one_event_so_it_anchors_the_pace_alone() -> None:
    worker = paced("6x")
    assert worker._pace_budget == 1
    worker._size_paced_batch([1_000])
    assert worker._pace_budget == 1  # one event, no spacing to go by yet


def test_sparse_events_go_one_batch_each() -> None:
    worker = paced("6x")
    for stamp in range(0, 60_000, 2_000):  # 2 s apart: a third of a second apart at 6x
        worker._size_paced_batch([stamp])
        assert worker._pace_budget == 1


def test_dense_events_fill_about_a_tenth_of_a_second_per_batch() -> None:
    worker = paced("1x")
    worker._size_paced_batch([0])
    worker._size_paced_batch([1])  # 1 ms apart: 1,000 events/s at 1x
    assert worker._pace_budget == 100
    worker._size_paced_batch(list(range(2, 102)))
    assert worker._pace_budget == 100
    faster = paced("10x")
    faster._size_paced_batch([0])
    faster._size_paced_batch(list(range(1, 101)))
    assert faster._pace_budget == 1_000


def test_events_with_one_timestamp_grow_the_batch_up_to_the_batch_size() -> None:
    worker = paced("2x", batch_size=500)
    worker._size_paced_batch([5_000])
    sizes = []
    for _ in range(6):
        worker._size_paced_batch([5_000] * worker._pace_budget)
        sizes.append(worker._pace_budget)
    assert sizes == [2, 4, 8, 16, 32, 64]
    worker._size_paced_batch([5_000] * 400)
    assert worker._pace_budget == 500


def test_a_timestamp_older_than_the_last_batch_is_measured_within_its_batch() -> None:
    worker = paced("1x")
    worker._size_paced_batch([100_000])
    worker._size_paced_batch([50_000, 50_010])  # another partition, behind: 2 events in 10 ms
    assert worker._pace_budget == 10
