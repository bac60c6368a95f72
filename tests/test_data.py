"""Datasets: conversion, bundled copies, training sequences, windows, merging, synthetic files."""
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import build_tiny, make_rows
from recbole.data import create_dataset

from recbole_rsir.config import Config
from recbole_rsir.data.bundled import BUNDLED, BUNDLED_DIR, ensure_dataset
from recbole_rsir.data.convert import read_sequences, write_atomic
from recbole_rsir.data.loader import SequenceTrainLoader, length_chunks, pack, windows
from recbole_rsir.data.merge import prefix_rows, training_loader, write_synthetic
from recbole_rsir.data.sequences import SequenceSet, eval_targets, training_sequences
from recbole_rsir.errors import DatasetFormatError, UnknownDatasetError

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets")


def test_read_sequences_with_day_gaps(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1 5 6 7\t0 86400 0\n2 8 9\n")
    rows = read_sequences(str(path))
    assert rows[0] == (1, [5, 6, 7], [0, 86401, 86402])   # cumulative gaps + position
    assert rows[1] == (2, [8, 9], [0, 1])


@pytest.mark.parametrize("text, message", [
    ("1 5 x\n", "x.txt:1: item 'x' is not an integer id"),
    ("1 5 6\n2\n", "x.txt:2: user 2 has an empty sequence"),
    ("1 5 6\t0\n", "x.txt:1: 2 items but 1 gaps"),
    ("1 5\n1 6\n", "x.txt:2: user 1 appears twice"),
])
def test_malformed_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "x.txt"
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=message):
        read_sequences(str(path))


def test_convert_cli_output_loads_in_recbole(tmp_path):
    rows = make_rows(n_users=12, n_items=20)
    src = tmp_path / "mine.txt"
    src.write_text("".join(f"{u} {' '.join(map(str, items))}\n" for u, items, _ in rows))
    out = tmp_path / "data"
    done = subprocess.run([sys.executable, "-m", "recbole_rsir.data", "convert", str(src), "--name", "mine",
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    config = Config("SASRec", "mine", config_dict={"data_path": str(out), "state": "WARNING"})
    dataset = create_dataset(config)
    assert dataset.user_num - 1 == 12
    assert dataset.inter_num == sum(len(items) for _, items, _ in rows)
    bad = subprocess.run([sys.executable, "-m", "recbole_rsir.data", "convert", str(tmp_path / "none.txt"),
                          "--name", "z"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: dataset file not found")


@pytest.mark.parametrize("name, users, items, inters", [
    ("amazon-beauty", 22363, 12101, 198502),
    ("amazon-sports-outdoors", 35598, 18357, 296337),
    ("ml-1m", 6040, 3416, 999611),
])
def test_bundled_datasets_are_the_5core_benchmarks(name, users, items, inters):
    with gzip.open(os.path.join(BUNDLED_DIR, f"{name}.inter.gz"), "rt") as f:
        assert f.readline() == "user_id:token\titem_id:token\ttimestamp:float\n"
        table = np.loadtxt(f, dtype=np.int64)
    assert (len(np.unique(table[:, 0])), len(np.unique(table[:, 1])), len(table)) == (users, items, inters)
    # per user, timestamps strictly increase, so RecBole's time order is the file's order
    same_user = table[1:, 0] == table[:-1, 0]
    assert (table[1:, 2][same_user] > table[:-1, 2][same_user]).all()


def _unpack_after(barrier, data_path):
    barrier.wait()
    ensure_dataset(data_path, "amazon-beauty")


def test_runs_started_together_unpack_the_same_dataset_safely(tmp_path):
    import multiprocessing

    data_path = str(tmp_path / "amazon-beauty")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    workers = [context.Process(target=_unpack_after, args=(barrier, data_path)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert os.listdir(data_path) == ["amazon-beauty.inter"]
    with gzip.open(os.path.join(BUNDLED_DIR, "amazon-beauty.inter.gz"), "rb") as f:
        assert (tmp_path / "amazon-beauty" / "amazon-beauty.inter").read_bytes() == f.read()


def test_bundled_beauty_equals_shared_source():
    source = os.path.join(SHARED, "Beauty", "Beauty_with_day_intervals_TimeWeaver.txt")
    if not os.path.isfile(source):
        pytest.skip("shared datasets not present")
    rows = read_sequences(source)
    with gzip.open(os.path.join(BUNDLED_DIR, "amazon-beauty.inter.gz"), "rt") as f:
        f.readline()
        table = np.loadtxt(f, dtype=np.int64)
    expected = np.array([(u, i, t) for u, items, ts in rows for i, t in zip(items, ts)])
    assert np.array_equal(table, expected)


def test_ensure_dataset_unpacks_once_and_user_files_win(tmp_path):
    path = ensure_dataset(str(tmp_path / "amazon-beauty"), "amazon-beauty")
    with gzip.open(os.path.join(BUNDLED_DIR, "amazon-beauty.inter.gz"), "rb") as f:
        assert open(path, "rb").read() == f.read()
    unpacked = os.stat(path).st_mtime_ns
    assert ensure_dataset(str(tmp_path / "amazon-beauty"), "amazon-beauty") == path
    assert os.stat(path).st_mtime_ns == unpacked and os.listdir(tmp_path / "amazon-beauty") == ["amazon-beauty.inter"]
    own = tmp_path / "ml-1m"
    own.mkdir()
    (own / "ml-1m.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t0\n")
    assert ensure_dataset(str(own), "ml-1m") == str(own / "ml-1m.inter")
    assert (own / "ml-1m.inter").read_text().count("\n") == 2
    with pytest.raises(UnknownDatasetError, match="bundled: " + ", ".join(BUNDLED)):
        ensure_dataset(str(tmp_path / "nope"), "nope")
    assert not (tmp_path / "nope").exists()


def test_training_sequences_are_all_but_the_last_two_items(tiny_data_path, tiny):
    config, dataset, train_data, valid_data, test_data = tiny
    real = training_sequences(train_data.dataset)
    rows = {str(u): (items, ts) for u, items, ts in make_rows()}
    assert len(real) == len(rows)
    valid, test = eval_targets(valid_data.dataset), eval_targets(test_data.dataset)
    for i in range(len(real)):
        user = dataset.id2token("user_id", real.users[i])
        items, ts = rows[user]
        assert dataset.id2token("item_id", real[i]).astype(int).tolist() == items[:-2]
        assert real.times(i).tolist() == ts[:-2]
        assert int(dataset.id2token("item_id", valid[real.users[i]])) == items[-2]
        assert int(dataset.id2token("item_id", test[real.users[i]])) == items[-1]


def test_windows_cover_every_target_once():
    seqs = SequenceSet.from_lists([[1, 2], [3, 4, 5, 6, 7, 8, 9], [10]], [[0, 1], list(range(7)), [0]], [1, 2, 3])
    items, times, lengths = windows(seqs, max_len=3)
    rows = [items[r, :lengths[r]].tolist() for r in range(len(lengths))]
    assert rows == [[1, 2], [3, 4, 5, 6], [6, 7, 8, 9]]      # length-1 sequence has no target
    assert times[2, :4].tolist() == [3, 4, 5, 6]
    targets = sorted(t for row in rows for t in row[1:])
    assert targets == [2, 4, 5, 6, 7, 8, 9]


def test_loader_batches_are_trimmed_shuffled_and_complete():
    rng = np.random.default_rng(0)
    seqs = SequenceSet.from_lists([rng.integers(1, 50, rng.integers(2, 30)).tolist() for _ in range(100)])
    loader = SequenceTrainLoader(seqs, batch_size=16, max_len=40, seed=3)
    seen = []
    for items, lengths, times in loader:
        assert items.shape[1] == int(lengths.max())
        assert (items[torch.arange(len(lengths)), lengths - 1] > 0).all()
        seen += [tuple(items[r, :lengths[r]].tolist()) for r in range(len(lengths))]
    assert sorted(seen) == sorted(tuple(s) for s in seqs.to_lists())
    again = [b[0].tolist() for b in SequenceTrainLoader(seqs, 16, 40, seed=3)]
    other_epoch = [b[0].tolist() for b in loader]
    assert again == [b[0].tolist() for b in SequenceTrainLoader(seqs, 16, 40, seed=3)]
    assert again != other_epoch


def test_prefix_rows_equal_recboles_own_augmentation(tiny_data_path):
    config, dataset, train_data, _, _ = build_tiny(tiny_data_path, MAX_ITEM_LIST_LENGTH=6)
    train = train_data.dataset
    real = training_sequences(train)
    rows = prefix_rows(train, real)
    ours = sorted(zip(rows["user_id"].tolist(), rows["item_length"].tolist(), rows["item_id"].tolist(),
                      map(tuple, rows["item_id_list"].tolist()), map(tuple, rows["timestamp_list"].tolist())))
    inter = train.inter_feat
    recbole = sorted(zip(inter["user_id"].tolist(), inter["item_length"].tolist(), inter["item_id"].tolist(),
                         map(tuple, inter["item_id_list"].tolist()), map(tuple, inter["timestamp_list"].tolist())))
    assert ours == recbole


def test_recbole_path_merge_appends_synthetic_rows_only_to_training(tiny_data_path):
    config, dataset, train_data, valid_data, _ = build_tiny(tiny_data_path, train_path="recbole")
    real = training_sequences(train_data.dataset)
    synthetic = SequenceSet.from_lists([[1, 2, 3], [4, 5, 6, 7]], [[0, 1, 2], [0, 1, 2, 3]], [1, 2])
    merged = training_loader(config, train_data, real, synthetic)
    inter, before, n = merged.dataset.inter_feat, train_data.dataset.inter_feat, len(train_data.dataset.inter_feat)
    assert len(inter) == n + 2 + 3
    for field in before.interaction:
        assert torch.equal(inter[field][:n], before[field])              # the real rows first, as they were
    added = [(int(inter["user_id"][r]), inter["item_id_list"][r][:int(inter["item_length"][r])].tolist(),
              int(inter["item_id"][r])) for r in range(n, n + 5)]
    assert added == [(1, [1], 2), (1, [1, 2], 3), (2, [4], 5), (2, [4, 5], 6), (2, [4, 5, 6], 7)]
    assert len(valid_data.dataset.inter_feat) == dataset.user_num - 1


def test_synthetic_atomic_file_loads_in_recbole(tiny_data_path, tiny):
    config, dataset, train_data, _, _ = tiny
    synthetic = SequenceSet.from_lists([[1, 2, 3], [4, 5, 6, 7], [3, 2, 1]],
                                       [[0, 1, 2], [0, 1, 2, 3], [5, 6, 7]], [1, 2, 1])
    out = os.path.join(tiny_data_path, "syn")
    write_synthetic(os.path.join(out, "tiny-rsir-round1", "tiny-rsir-round1.inter"), train_data.dataset,
                    synthetic, 1)
    loaded = create_dataset(Config("SASRec", "tiny-rsir-round1", config_dict={"data_path": out, "state": "WARNING"}))
    assert loaded.user_num - 1 == 3 and loaded.inter_num == 10
    tokens = sorted(tuple(loaded.id2token("item_id", loaded.inter_feat["item_id"][loaded.inter_feat["user_id"] == u]))
                    for u in range(1, 4))
    expected = sorted(tuple(train_data.dataset.id2token("item_id", synthetic[i])) for i in range(3))
    assert tokens == expected


@pytest.mark.parametrize("body, message", [
    ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\n", "bad.inter:2: 2 fields, header has 3"),
    ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tsoon\n", "bad.inter:2: timestamp 'soon' is not a number"),
    ("user_id:token\titem_id:token\ttimestamp:float\n1\t\t3\n", "bad.inter:2: empty item_id"),
    ("user_id:token\titem_id:token\n1\t2\n", "bad.inter:1: header lacks timestamp"),
    ("user_id:token\titem_id:token\ttimestamp:float\n", "bad.inter: no interactions"),
])
def test_malformed_atomic_files_are_reported_by_line(tmp_path, body, message):
    from recbole_rsir.data.bundled import check_dataset

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.inter").write_text(body)
    with pytest.raises(DatasetFormatError, match=message):
        check_dataset(str(tmp_path / "bad"), "bad")


def test_dataset_too_small_to_split_is_refused(tmp_path):
    from recbole_rsir.data import create_dataset

    write_atomic([(1, [1, 2, 3, 4], [0, 1, 2, 3]), (2, [2, 3, 4], [0, 1, 2])], str(tmp_path / "small" / "small.inter"))
    config = Config("SASRec", "small", config_dict={"data_path": str(tmp_path), "state": "WARNING"})
    with pytest.raises(DatasetFormatError, match="too small to split: 1 of 2 users have fewer than 4"):
        create_dataset(config)


def test_length_groups_trade_padding_for_randomness():
    rng = np.random.default_rng(1)
    seqs = SequenceSet.from_lists([rng.integers(1, 50, rng.integers(2, 30)).tolist() for _ in range(400)])

    def batch_rows(groups):
        loader = SequenceTrainLoader(seqs, 16, 40, seed=5, length_groups=groups)
        return [sorted(index.tolist()) for index in loader._batches()], loader

    plain, loader = batch_rows(1)
    reference = torch.randperm(len(loader.lengths), generator=torch.Generator().manual_seed(5)).split(16)
    assert sorted(plain) == sorted(sorted(b.tolist()) for b in reference)     # 1: random rows per batch

    def padding(rows):
        return sum(int(loader.lengths[r].max()) * len(r) - int(loader.lengths[r].sum()) for r in rows)

    grouped, _ = batch_rows(25)                                               # the whole epoch in one group
    assert padding(grouped) < padding(plain) / 4


def test_length_chunks_cut_a_batch_at_doubling_lengths():
    lengths = torch.tensor([5, 50, 2, 7, 3, 17, 9, 4, 2, 11, 8, 33])
    parts = length_chunks(lengths)
    assert sorted(torch.cat(parts).tolist()) == list(range(len(lengths)))   # every row exactly once
    assert [sorted(lengths[p].tolist()) for p in parts] == [[2, 2, 3, 4], [5, 7, 8], [9, 11], [17], [33, 50]]
    for part in parts:                                                         # padding <= a row's length
        assert int(lengths[part].max()) <= 2 * int(lengths[part].min())
    assert [p.tolist() for p in length_chunks(torch.tensor([3, 2, 3]))] == [[1, 0, 2]]


def test_pack_lays_every_sequence_in_its_own_slot():
    lengths = torch.tensor([2, 9, 3, 4, 2, 6, 3])
    items = torch.zeros(len(lengths), 9, dtype=torch.long)
    for b, n in enumerate(lengths.tolist()):
        items[b, :n] = 100 * (b + 1) + torch.arange(n)          # item ids name (row, position)
    packed = pack(items, lengths)
    width = packed.inputs.shape[1]
    assert width == 8 and len(packed.inputs) < len(lengths)
    inputs, positions = packed.inputs.view(-1), packed.positions.view(-1)
    # every target of every row once, each read at the column holding its preceding item
    expected = sorted((int(items[b, t]), int(items[b, t + 1])) for b, n in enumerate(lengths.tolist())
                      for t in range(n - 1))
    assert sorted(zip(inputs[packed.index].tolist(), packed.targets.tolist())) == expected
    assert (positions[packed.index] == inputs[packed.index] % 100).all()
    assert inputs[packed.last].tolist() == [int(items[b, n - 2]) for b, n in enumerate(lengths.tolist())]
    # a column sees exactly the earlier items of its own sequence
    for flat in packed.index.tolist():
        r, c = divmod(flat, width)
        seen = packed.inputs[r][packed.allowed[r, c]]
        item = int(packed.inputs[r, c])
        assert sorted(seen.tolist()) == list(range(item - item % 100, item + 1))
