"""Durable state: journal with torn tail, checkpoint round trip, restore = checkpoint + journal replay."""
from __future__ import annotations

import json

import pytest
import torch

from rlhf.models.device import DeviceUnavailable
from rlhf.reward_trainer.checkpoint import CheckpointStore, JournalRecord
from rlhf.reward_trainer.learner import RewardLearner
from rlhf.reward_trainer.settings import RewardTrainerSettings

from .helpers import comparison, records


def test_journal_replays_batches_in_order_and_ignores_a_torn_tail(tmp_path):
    store = CheckpointStore(tmp_path)
    a = [JournalRecord("t", 0, 0, b"\x00one"), JournalRecord("t", 1, 5, b"two")]
    b = [JournalRecord("t", 0, 1, b"three")]
    store.append(a)
    store.append(b)
    store.close_journal()
    with open(store.journal_path(0), "ab") as f:
        f.write(b'[{"t": "t", "p": 0, "o": 2, "v": "dG9y')  # crash mid-write
    assert list(CheckpointStore(tmp_path).replay()) == [a, b]


def settings(tmp_path, policy) -> RewardTrainerSettings:
    return RewardTrainerSettings(base_model=str(policy), checkpoint_dir=str(tmp_path / "ckpt"), batch_size=4,
                                 max_length=64, heldout_fraction=0.25, lr=1e-3)


def test_restore_is_checkpoint_plus_journal(tmp_path, tiny_policy_dir):
    s = settings(tmp_path, tiny_policy_dir)
    store = CheckpointStore(s.checkpoint_dir)
    learner, replayed = RewardLearner.restore(s, store)
    assert replayed == 0 and learner.trainer.steps == 0
    events = [comparison(i) for i in range(30)]
    first, second = records(events[:20]), records(events[20:], start=20)
    store.append(first)
    learner.ingest(first)
    learner.train(3)
    trained = list(learner.trainer.newly_trained_ids)
    seq = learner.save(store)
    assert seq == 1 and store.ckpt_dir(1).exists()
    store.append(second)  # consumed after the checkpoint: only in the journal
    learner.ingest(second)
    learner.ingest(first)  # a redelivery changes nothing

    again, replayed = RewardLearner.restore(s, CheckpointStore(s.checkpoint_dir))
    assert replayed == 10
    assert again.builder.seen.ids() == learner.builder.seen.ids() and len(again.builder.seen) == 30
    assert again.consumed == learner.consumed == {"comparison": 30}
    assert again.offsets == learner.offsets == {"rlhf.feedback:0": 30}
    assert [p.pair_id for p in again.trainer.heldout] == [p.pair_id for p in learner.trainer.heldout]
    assert [p.pair_id for p in again.trainer.fresh] == [p.pair_id for p in learner.trainer.fresh]
    assert again.trainer.steps == 3
    assert again.trainer.newly_trained_ids == [] and learner.trainer.newly_trained_ids == []  # in the audit log
    assert trained and CheckpointStore(s.checkpoint_dir).trained_ids() == trained
    for (name, a), b in zip(learner.rm.model.state_dict().items(), again.rm.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert again.trainer.optimizer.state_dict()["state"].keys() == learner.trainer.optimizer.state_dict()["state"].keys()
    # the relevance prior (on by default) comes back with its learnt weight, not a fresh one
    assert again.rm.relevance.weight.item() == learner.rm.relevance.weight.item() != 0.0
    json.dumps(again.state_dict())  # the state is plain JSON


def test_a_checkpoint_from_before_the_relevance_prior_restores_with_a_fresh_one(tmp_path, tiny_policy_dir, caplog):
    without = settings(tmp_path, tiny_policy_dir).model_copy(update={"relevance_encoder": ""})
    store = CheckpointStore(without.checkpoint_dir)
    learner, _ = RewardLearner.restore(without, store)
    learner.ingest(records([comparison(i) for i in range(8)]))
    learner.train(2)
    learner.save(store)
    assert learner.rm.relevance is None

    again, _ = RewardLearner.restore(settings(tmp_path, tiny_policy_dir), CheckpointStore(without.checkpoint_dir))
    assert again.rm.relevance is not None and again.rm.relevance.weight.item() == 0.0
    assert again.trainer.steps == 2  # the learner's state is kept; only the optimizer's moments start afresh
    assert "optimizer state not restored" in caplog.text
    assert again.trainer.step() is not None or again.trainer.replay_step() is not None  # and it trains on


def test_new_checkpoint_replaces_the_old_one_and_its_journal(tmp_path, tiny_policy_dir):
    s = settings(tmp_path, tiny_policy_dir)
    store = CheckpointStore(s.checkpoint_dir)
    learner, _ = RewardLearner.restore(s, store)
    learner.save(store)
    store.append(records([comparison(0)]))
    learner.save(store)
    names = sorted(p.name for p in store.root.iterdir())
    assert names == ["LATEST", "ckpt-000002", "trained-ids.log"]
    assert (store.root / "LATEST").read_text() == "ckpt-000002"


def test_leftovers_of_a_crash_during_checkpointing_are_removed(tmp_path):
    (tmp_path / "LATEST").write_text("ckpt-000003")
    for name in ("ckpt-000002", "ckpt-000003", "ckpt-000004.tmp"):
        (tmp_path / name).mkdir()
    for name in ("journal-000002.jsonl", "journal-000003.jsonl", "LATEST.tmp"):
        (tmp_path / name).write_text("")
    store = CheckpointStore(tmp_path)
    assert store.seq == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000003", "journal-000003.jsonl"]


def test_audit_log_holds_what_the_latest_checkpoint_trained_and_nothing_twice(tmp_path):
    store = CheckpointStore(tmp_path)
    save_model = lambda d: d.mkdir()  # noqa: E731
    store.save(save_model, {}, {"n": 1}, trained_ids=["a", "b"])
    store.save(save_model, {}, {"n": 2}, trained_ids=["c"])
    assert store.trained_ids() == ["a", "b", "c"]
    # A save that appended its ids but died before LATEST moved: a restart must not count them.
    store._append_trained(["d", "e"])
    again = CheckpointStore(tmp_path)
    assert again.load().state == {"n": 2} and again.trained_ids() == ["a", "b", "c"]
    assert (tmp_path / "trained-ids.log").read_text() == "a\nb\nc\n"
    # The retrained pairs come back with the next checkpoint, once.
    again.save(save_model, {}, {"n": 3}, trained_ids=["d", "e"])
    assert CheckpointStore(tmp_path).trained_ids() == ["a", "b", "c", "d", "e"]


def test_a_checkpoint_from_before_the_audit_log_seeds_it(tmp_path, tiny_policy_dir):
    s = settings(tmp_path, tiny_policy_dir)
    learner, _ = RewardLearner.restore(s, CheckpointStore(s.checkpoint_dir))
    learner.ingest(records([comparison(i) for i in range(20)]))
    learner.train(3)
    store = CheckpointStore(s.checkpoint_dir)
    trained = list(learner.trainer.newly_trained_ids)
    assert trained
    learner.save(store)
    # Rewrite it as the old layout: ids in state.json, no audit.json, no log.
    ckpt = store.ckpt_dir(store.seq)
    state = json.loads((ckpt / "state.json").read_text())
    state["trainer"]["trained_feedback_ids"] = sorted(set(trained))
    (ckpt / "state.json").write_text(json.dumps(state))
    (ckpt / "audit.json").unlink()
    (tmp_path / "ckpt" / "trained-ids.log").write_text("left by a save that never finished\n")
    again, _ = RewardLearner.restore(s, CheckpointStore(s.checkpoint_dir))
    store = CheckpointStore(s.checkpoint_dir)
    again.save(store)
    assert sorted(store.trained_ids()) == sorted(set(trained))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_missing_gpu_is_refused_before_any_weights_are_read(tmp_path):
    gpu = RewardTrainerSettings(base_model=str(tmp_path / "no-such-model"), checkpoint_dir=str(tmp_path / "ckpt"),
                                device="cuda")
    with pytest.raises(DeviceUnavailable, match="no CUDA GPU"):
        RewardLearner.restore(gpu, CheckpointStore(gpu.checkpoint_dir))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_the_service_stops_at_start_up_when_its_gpu_is_missing(monkeypatch, capfd):
    from rlhf.reward_trainer.service import main

    monkeypatch.setenv("RLHF_REWARD_DEVICE", "cuda")
    monkeypatch.setenv("RLHF_REWARD_METRICS_PORT", "0")
    assert main() == 2
    logged = capfd.readouterr()
    assert "no CUDA GPU" in logged.out + logged.err and "RLHF_REWARD_DEVICE" in logged.out + logged.err
