"""The learner: transport and feedback dedup, dropped reasons, when it asks the gate."""
from __future__ import annotations

import pytest

from rlhf.common.events import wrap
from rlhf.models.reward import RewardModel
from rlhf.reward_trainer.checkpoint import JournalRecord
from rlhf.reward_trainer.learner import RewardLearner
from rlhf.reward_trainer.settings import RewardTrainerSettings

from .helpers import comparison, records


@pytest.fixture
def learner(tiny_policy_dir) -> RewardLearner:
    s = RewardTrainerSettings(base_model=str(tiny_policy_dir), batch_size=4, replay_fraction=0.0, replay_passes=2.0,
                              max_length=64, heldout_fraction=0.0, publish_every_pairs=8, publish_min_heldout=1,
                              user_cap=5, publish_min_interval_s=0)
    return RewardLearner(s, RewardModel.from_pretrained(tiny_policy_dir, max_length=64))


def test_redelivered_events_and_repeated_feedback_count_once(learner):
    batch = records([comparison(i) for i in range(4)])
    assert learner.ingest(batch).by_kind == {"comparison": 4}
    again = learner.ingest(batch)  # same event ids: a transport redelivery
    assert not again.by_kind and not again.pairs and not again.dropped
    resent = JournalRecord("rlhf.feedback", 0, 99, wrap(comparison(0), "test", event_id="another").SerializeToString())
    got = learner.ingest([resent])  # a new event carrying a feedback id already counted
    assert not got.by_kind and got.dropped == {"duplicate": 1}
    assert learner.consumed == {"comparison": 4} and learner.offsets == {"rlhf.feedback:0": 100}


def test_flooding_user_is_capped(learner):
    got = learner.ingest(records([comparison(i, user="flood") for i in range(8)]))
    assert len(got.pairs) == 5 and got.dropped == {"capped": 3}
    assert learner.consumed == {"comparison": 8}


def test_asks_the_gate_after_new_pairs_and_once_at_rest(learner):
    learner.ingest(records([comparison(i) for i in range(8)]))
    assert not learner.due_for_publish()
    learner.train(1)
    assert not learner.due_for_publish()  # 4 new pairs < 8
    learner.train(1)
    assert learner.due_for_publish()
    decision, ev = learner.gate()
    assert not learner.due_for_publish()
    assert learner.train(100) and learner.trainer.examples_seen == 16  # replay up to 2 passes, then rest
    assert learner.due_for_publish()  # at rest with unseen progress
    learner.gate()
    assert not learner.due_for_publish()


def test_publications_are_spaced_by_the_min_interval(learner):
    learner.settings = learner.settings.model_copy(update={"publish_min_interval_s": 30.0})
    learner.ingest(records([comparison(i) for i in range(12)]))
    learner.train(100)
    assert learner.due_for_publish(now=1000.0)  # nothing published yet: no interval applies
    decision, ev = learner.gate()
    learner.record_publish(1, ev, at_unix=1000.0)
    learner.ingest(records([comparison(i) for i in range(12, 30)], start=12))
    learner.train(100)
    assert not learner.due_for_publish(now=1029.0)
    assert learner.due_for_publish(now=1030.0)


def test_start_warns_when_the_learning_rate_is_high_for_the_backbone(tiny_policy_dir, monkeypatch, caplog):
    import rlhf.reward_trainer.trainer as trainer

    rm = RewardModel.from_pretrained(tiny_policy_dir, max_length=64)
    monkeypatch.setattr(trainer, "LARGE_BACKBONE_PARAMS", 1)  # the tiny backbone stands in for a large one
    with caplog.at_level("WARNING", logger="rlhf.reward_trainer.learner"):
        RewardLearner(RewardTrainerSettings(base_model=str(tiny_policy_dir), lr=3e-5), rm)
        assert not [r for r in caplog.records if "RLHF_REWARD_LR" in r.getMessage()]
        RewardLearner(RewardTrainerSettings(base_model=str(tiny_policy_dir), lr=1e-4), rm)
    assert [r for r in caplog.records if "RLHF_REWARD_LR=0.0001" in r.getMessage()]
