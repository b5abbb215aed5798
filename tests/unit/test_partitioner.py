"""gateway.kafka.partitioner: the same partitions as Kafka's Java client and aiokafka's default partitioner."""

from __future__ import annotations

import os
import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from gateway.kafka.partitioner import KeyPartitioner, murmur2


def signed(h: int) -> int:
    return h - (1 << 32) if h & 0x80000000 else h


def test_murmur2_matches_the_java_clients_test_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    vectors = {
        b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {k: signed(murmur2(k)) for k in vectors} == vectors


def test_murmur2_and_partitions_match_aiokafka_for_every_tail_length() -> None:
    rng = random.Random(7)
    keys = [os.urandom(n) for n in range(0, 70)] + [bytes(rng.getrandbits(8) for _ in range(36)) for _ in range(300)]
    keys += [b"\xff" * n for n in range(9)]  # the high bit of every byte: no sign mix-ups
    ours, theirs = KeyPartitioner(), DefaultPartitioner()
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF, key
        for n in (1, 3, 4, 7, 50):
            partitions = list(range(n))
            assert ours(key, partitions, partitions) == theirs(key, partitions, partitions), (key, n)


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert {KeyPartitioner()(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert KeyPartitioner()(None, [0, 1], []) in {0, 1}
