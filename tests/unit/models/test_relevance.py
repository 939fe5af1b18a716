"""The relevance prior: a frozen MiniLM's cos(request, answer), times a weight learnt from feedback."""
from __future__ import annotations

import json

import pytest
import torch

from rlhf.common.settings import SettingsError
from rlhf.models.rated import Side
from rlhf.models.relevance import (
    RELEVANCE_FILE,
    RelevancePrior,
    SentenceEncoder,
    request_text,
    resolve_encoder,
    shared_encoder,
)
from rlhf.models.reward import RewardModel
from rlhf.reward_trainer.pairs import Pair
from rlhf.reward_trainer.settings import TrainSettings
from rlhf.reward_trainer.trainer import BTTrainer

REFUND = "Hello, Grace here. How do I return the coffee grinder (order 81149) and get a refund?"
PASSWORD = "Hi, I am Pedro. I forgot my password and cannot log in, what can I do?"
REFUND_ANSWER = "Please send the coffee grinder back with the return label; the refund follows within 5 days."
PASSWORD_ANSWER = "Use the 'forgot password' link on the login page; a reset link arrives by email."


@pytest.fixture(scope="module")
def prior() -> RelevancePrior:
    return RelevancePrior("minilm")


def side(request: str, answer: str) -> Side:
    return Side((("system", "be brief"), ("user", request)), answer)


def test_an_answer_to_the_request_is_closer_than_a_nicer_answer_to_another(prior):
    right, wrong = prior.features([side(REFUND, REFUND_ANSWER), side(REFUND, "Dear Grace, thank you! " + PASSWORD_ANSWER)])
    assert right > wrong + 0.1
    right, wrong = prior.features([side(PASSWORD, PASSWORD_ANSWER), side(PASSWORD, REFUND_ANSWER)])
    assert right > wrong + 0.1


def test_the_request_is_the_last_user_message():
    s = Side((("user", "first"), ("assistant", "ok"), ("user", "second")), "answer")
    assert request_text(s) == "second"
    assert request_text(Side((), "answer", prompt_text="raw prompt")) == "raw prompt"


def test_embeddings_are_unit_length_and_the_cache_stays_bounded():
    enc = SentenceEncoder(resolve_encoder("minilm"), cache_size=3)
    e = enc.embed(["a", "b", "c", "d", "a"])
    assert e.shape == (5, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.equal(e[0], e[4])
    assert len(enc._cache) == 3


def test_the_shared_encoders_cache_bound_comes_from_the_environment(monkeypatch):
    """RLHF_RELEVANCE_CACHE_TEXTS bounds the embedding cache of the encoder every reward model of a process
    shares; an invalid value is refused with the variable's name. (A max_length of its own keeps this test's
    encoder apart from those the other tests share.)"""
    path = resolve_encoder("minilm")
    monkeypatch.setenv("RLHF_RELEVANCE_CACHE_TEXTS", "0")
    with pytest.raises(SettingsError, match="RLHF_RELEVANCE_CACHE_TEXTS"):
        shared_encoder(path, 61, "cpu")
    monkeypatch.setenv("RLHF_RELEVANCE_CACHE_TEXTS", "2")
    enc = shared_encoder(path, 61, "cpu")
    enc.embed(["one", "two", "three"])
    assert enc.cache_size == 2 and len(enc._cache) == 2
    monkeypatch.delenv("RLHF_RELEVANCE_CACHE_TEXTS")
    assert shared_encoder(path, 62, "cpu").cache_size == 50_000


def test_moving_one_reward_model_leaves_the_others_encoder_where_it_was(tiny_policy_dir, rm_with_prior):
    """The encoder is shared per process, so moving one reward model must not move another's:
    a CPU scorer in a process whose learner went to a GPU would otherwise embed on the GPU."""
    other = RewardModel.from_pretrained(tiny_policy_dir, max_length=64, relevance_encoder="minilm")
    assert other.relevance.encoder is rm_with_prior.relevance.encoder  # loaded once per process
    before = rm_with_prior.score([side(REFUND, REFUND_ANSWER)])
    other.to("meta")  # a device of its own, as a GPU would be, without needing one
    assert other.relevance.encoder.model.device.type == "meta"
    assert rm_with_prior.relevance.encoder.model.device.type == "cpu"
    torch.testing.assert_close(rm_with_prior.score([side(REFUND, REFUND_ANSWER)]), before)
    back = RewardModel.from_pretrained(tiny_policy_dir, max_length=64, relevance_encoder="minilm").to("cpu")
    assert back.relevance.encoder is rm_with_prior.relevance.encoder  # moving to where it is takes the same one


def test_an_encoder_directory_must_hold_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        resolve_encoder(str(tmp_path))


@pytest.fixture
def rm_with_prior(tiny_policy_dir) -> RewardModel:
    rm = RewardModel.from_pretrained(tiny_policy_dir, max_length=64, relevance_encoder="minilm")
    with torch.no_grad():
        rm.relevance.weight.fill_(2.5)
    return rm


def test_the_score_adds_the_weighted_cosine(tiny_policy_dir, rm_with_prior):
    plain = RewardModel.from_pretrained(tiny_policy_dir, max_length=64)  # same head (same seed), no prior
    sides = [side(REFUND, REFUND_ANSWER), side(REFUND, PASSWORD_ANSWER)]
    cos = torch.tensor(rm_with_prior.relevance.features(sides))
    assert torch.allclose(rm_with_prior.score(sides), plain.score(sides) + 2.5 * cos, atol=1e-5)


def test_a_saved_model_keeps_its_prior_and_a_checkpoint_its_weight(tmp_path, rm_with_prior):
    out = rm_with_prior.save(tmp_path / "rm")
    spec = json.loads((out / RELEVANCE_FILE).read_text())
    assert spec["encoder"] == "minilm" and spec["weight"] == pytest.approx(2.5) and len(spec["encoder_sha256"]) == 64
    # loaded without asking for a prior (as the PPO learner does), or asking for a fresh one: the saved weight wins
    for encoder in ("", "minilm"):
        loaded = RewardModel.from_pretrained(out, max_length=64, relevance_encoder=encoder)
        assert loaded.relevance.weight.item() == pytest.approx(2.5)
    sides = [side(REFUND, REFUND_ANSWER), side(PASSWORD, REFUND_ANSWER)]
    assert torch.allclose(loaded.score(sides), rm_with_prior.score(sides), atol=1e-5)


def test_a_model_trained_with_another_encoder_is_refused(tmp_path, rm_with_prior):
    out = rm_with_prior.save(tmp_path / "rm")
    spec = json.loads((out / RELEVANCE_FILE).read_text())
    (out / RELEVANCE_FILE).write_text(json.dumps({**spec, "encoder_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="not the one this reward model was trained with"):
        RewardModel.from_pretrained(out)


def test_without_a_prior_nothing_is_added(tiny_policy_dir, tmp_path):
    rm = RewardModel.from_pretrained(tiny_policy_dir, max_length=64)
    assert rm.relevance is None
    assert all(s.relevance == 0.0 for s in rm.encode([side(REFUND, REFUND_ANSWER)]))
    assert not (rm.save(tmp_path / "rm") / RELEVANCE_FILE).exists()


def test_feedback_that_prefers_answers_to_the_request_raises_the_weight(tiny_policy_dir):
    """Chosen: the answer to the request; rejected: the same answers swapped to the other request."""
    rm = RewardModel.from_pretrained(tiny_policy_dir, max_length=64, relevance_encoder="minilm")
    trainer = BTTrainer(rm, TrainSettings(batch_size=8, lr=1e-4, max_length=64, dropout=0.0))
    pairs = []
    for i in range(16):
        name = f"user{i}"
        for request, answer, other in ((REFUND, REFUND_ANSWER, PASSWORD_ANSWER), (PASSWORD, PASSWORD_ANSWER, REFUND_ANSWER)):
            q = f"{request} ({name})"
            pairs.append(Pair(f"p{len(pairs)}", side(q, answer), side(q, other), (f"f{len(pairs)}",), "comparison", False))
    trainer.add(pairs)
    while trainer.step() is not None:
        pass
    for _ in range(10):
        trainer.train_on(trainer.buffer.sample(8, trainer.rng))
    assert rm.relevance.weight.item() > 0.5
    assert trainer.evaluate().n == 0 and len(trainer.optimizer.param_groups) == 2
