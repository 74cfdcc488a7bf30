"""The shape-bucketing batcher shared by the batched codecs."""

import pytest
import torch

from rdp_bench.codecs.batching import batched, bucket, chunks, image_shape, record_group
from rdp_bench.container import Container


def test_batched_runs_once_per_shape_and_returns_results_in_input_order():
    images = [torch.zeros(3, 4, 5), torch.zeros(3, 8, 8), torch.ones(3, 4, 5), torch.zeros(3, 8, 8) + 2]
    calls = []

    def run(shape, idx):
        calls.append((shape, idx))
        return [float(images[i].mean()) for i in idx]

    assert batched(images, image_shape, run) == [0.0, 0.0, 1.0, 2.0]
    assert calls == [((3, 4, 5), [0, 2]), ((3, 8, 8), [1, 3])]
    with pytest.raises(RuntimeError, match="2 items gave 1"):
        batched(images, image_shape, lambda shape, idx: [0])


def test_record_groups_and_pixel_bounded_chunks():
    records = [Container("jpeg", r, h, 9, b"") for r, h in [(0, 4), (1, 4), (0, 4), (0, 5)]]
    assert bucket(records, record_group) == {(0, 4, 9): [0, 2], (1, 4, 9): [1], (0, 5, 9): [3]}
    assert chunks(range(5), 100, 250) == [[0, 1], [2, 3], [4]]
    assert chunks([7, 8], 1000, 10) == [[7], [8]]  # an image over the bound still goes, alone
