"""Our Bradley-Terry trainer vs TRL's RewardTrainer: same backbone, same pairs, batch size and steps.

Pairs come from simulated users' feedback on the SFT policy's answers
(bench/reward_feedback.py), split by the reward trainer's own held-out rule.
Both trainers then start from the same weights (the backbone: by default the
SFT policy, or `--backbone DIR`, e.g. the MiniLM encoder; the same seeded
scalar head) and see the same token ids: TRL gets the pairs already tokenized
with the chat template (`chosen_ids`/`rejected_ids`), which sidesteps two TRL
traps (it joins prompt and answer with no separator, and silently drops pairs
longer than `max_length`). Same optimizer (AdamW, constant
learning rate, grad clip 1.0, no weight decay), batch size (pairs per step)
and number of steps; one after the other in one process, on the same
threads. Ours takes each step as the service does: fresh pairs topped up from
the replay buffer.

Timed: the optimizer steps only (both tokenize before training: TRL in its
constructor, ours when pairs arrive). Accuracy: both models scored by the same
function on the same held-out pairs, with the paired difference (ours - TRL) and its
standard error: on ~200 pairs one pair is half a point, so the difference says
whether a gap is more than noise.

  python bench/reward_vs_trl.py --policy .rlhf/sft [--backbone DIR] [--steps 150] [--batch 16] [--repeat 1] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_feedback import cached_rated_answers, simulate_feedback, world_answers, world_prompts  # noqa: E402

from rlhf.common.paired import paired_standard_error  # noqa: E402
from rlhf.models.reward import RewardModel, load_backbone  # noqa: E402
from rlhf.reward_trainer.pairs import PairBuilder  # noqa: E402
from rlhf.reward_trainer.settings import PairSettings, TrainSettings  # noqa: E402
from rlhf.reward_trainer.trainer import BTTrainer, evaluate  # noqa: E402


def make_pairs(args: argparse.Namespace, policy: str):
    prompts = world_prompts(args.prompts, seed=args.seed)
    if args.answers == "policy":
        groups = cached_rated_answers(policy, prompts, per_prompt=args.answers_per_prompt, seed=args.seed)
    else:
        groups = world_answers(prompts, per_prompt=args.answers_per_prompt, seed=args.seed)
    builder = PairBuilder(PairSettings(heldout_fraction=args.heldout_fraction, user_cap=10**6))
    pairs = [p for e in simulate_feedback(groups, args.events, seed=args.seed) for p in builder.add(e)]
    return [p for p in pairs if not p.heldout], [p for p in pairs if p.heldout]


def run_ours(backbone: str, train, heldout, args: argparse.Namespace) -> dict:
    # Without the relevance prior (RLHF_REWARD_RELEVANCE_ENCODER): TRL has nothing like it, and this
    # compares the two trainers on the same model.
    rm = RewardModel.from_pretrained(backbone, args.max_length, seed=args.seed)
    trainer = BTTrainer(rm, TrainSettings(batch_size=args.batch, lr=args.lr, max_length=args.max_length,
                                          replay_fraction=args.replay_fraction, seed=args.seed, dropout=args.dropout))
    trainer.add(train)  # tokenizes once, as the service does when pairs arrive
    # Pairs arrive as a stream in the service; here they are all waiting, and
    # after the first pass the replay buffer alone feeds the steps.
    t0 = time.perf_counter()
    for _ in range(args.steps):
        if trainer.step() is None:
            trainer.train_on(trainer.buffer.sample(args.batch, trainer.rng))
    seconds = time.perf_counter() - t0
    ev = evaluate(rm, heldout)
    return {"seconds": seconds, "accuracy": ev.accuracy, "outcomes": ev.outcomes, "last_loss": trainer.last_loss}


def run_trl(backbone: str, train, heldout, args: argparse.Namespace) -> dict:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rm = RewardModel.from_pretrained(backbone, args.max_length, seed=args.seed)
    ids = [rm.tokenize([p.chosen, p.rejected]) for p in train]
    data = Dataset.from_dict({"chosen_ids": [c.tolist() for c, _ in ids], "rejected_ids": [r.tolist() for _, r in ids]})
    model, tokenizer = load_backbone(backbone, seed=args.seed)  # same weights and head as ours
    with tempfile.TemporaryDirectory(prefix="rlhf-trl-") as out:
        config = RewardConfig(
            output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=args.lr,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
            max_length=args.max_length, save_strategy="no", report_to=[], logging_steps=max(args.steps // 5, 1),
            bf16=False, use_cpu=True, seed=args.seed, dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = RewardTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # its log lines would break `--json`'s one object on stdout
            result = trainer.train()
        seconds = time.perf_counter() - t0
    ev = evaluate(RewardModel(trainer.model, tokenizer, args.max_length), heldout)
    return {"seconds": seconds, "accuracy": ev.accuracy, "outcomes": ev.outcomes, "last_loss": result.training_loss}


def paired_difference(ours: list[dict], trl: list[dict]) -> tuple[float, float]:
    """Accuracy of ours minus TRL's on the same held-out pairs, and its standard error.

    Why paired: both models are scored on the same pairs, and only the pairs they order differently
    carry the difference, so its standard error is smaller than that of two independent accuracies
    (about 2.5 points on ~200 pairs with the SFT backbone, against about 4). It is the one the publish
    gates use (rlhf.common.paired). A gap within two of them is noise. Each pair's outcome is averaged
    over the repeats first.
    """
    ids = list(ours[0]["outcomes"])
    a = [statistics.fmean(r["outcomes"][i] for r in ours) for i in ids]
    b = [statistics.fmean(r["outcomes"][i] for r in trl) for i in ids]
    return statistics.fmean(a) - statistics.fmean(b), paired_standard_error(a, b)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    policy = args.policy
    if policy is None:
        from rlhf.sft.tiny import make_tiny_policy

        policy = str(make_tiny_policy(Path(args.workdir) / "tiny-policy"))
    train, heldout = make_pairs(args, policy)  # the policy's answers, rated by simulated users
    backbone = args.backbone or policy
    ours, trl = [], []
    for _ in range(args.repeat):  # alternate, so drift in machine load hits both alike
        ours.append(run_ours(backbone, train, heldout, args))
        trl.append(run_trl(backbone, train, heldout, args))
    examples = args.steps * args.batch
    eps_ours = examples / statistics.median(r["seconds"] for r in ours)
    eps_trl = examples / statistics.median(r["seconds"] for r in trl)
    diff, diff_se = paired_difference(ours, trl)
    return {
        "policy": policy,
        "backbone": backbone,
        "answers": args.answers,
        "train_pairs": len(train),
        "heldout_pairs": len(heldout),
        "steps": args.steps,
        "batch_pairs": args.batch,
        "lr": args.lr,
        "dropout_ours": args.dropout,
        "threads": args.threads,
        "repeat": args.repeat,
        "examples_per_s_ours": round(eps_ours, 1),
        "examples_per_s_trl": round(eps_trl, 1),
        "examples_per_s_ratio": round(eps_ours / eps_trl, 3),
        "accuracy_ours": round(statistics.median(r["accuracy"] for r in ours), 4),
        "accuracy_trl": round(statistics.median(r["accuracy"] for r in trl), 4),
        "accuracy_diff": round(diff, 4),
        "accuracy_diff_se": round(diff_se, 4),
        "final_loss_ours": round(ours[-1]["last_loss"], 4),
        "mean_train_loss_trl": round(trl[-1]["last_loss"], 4),
    }


def table(r: dict) -> str:
    return "\n".join([
        f"reward model: ours vs TRL RewardTrainer (backbone {r['backbone']}; {r['answers']} answers of {r['policy']})",
        f"  {r['train_pairs']} training pairs, {r['heldout_pairs']} held-out; {r['steps']} steps x {r['batch_pairs']} pairs,"
        f" lr {r['lr']}, ours with dropout {r['dropout_ours']} (TRL turns it off), {r['threads']} thread(s),"
        f" median of {r['repeat']}",
        f"  {'':<22}{'ours':>10}{'TRL':>10}{'ratio':>10}",
        f"  {'pairs/s':<22}{r['examples_per_s_ours']:>10}{r['examples_per_s_trl']:>10}{r['examples_per_s_ratio']:>10}",
        f"  {'held-out accuracy':<22}{r['accuracy_ours']:>10}{r['accuracy_trl']:>10}",
        f"  ours - TRL on the same held-out pairs: {r['accuracy_diff']:+.4f} +- {r['accuracy_diff_se']:.4f} (paired standard error)",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=None, help="SFT policy directory (default: train a tiny one)")
    p.add_argument("--backbone", default=None,
                   help="reward-model backbone directory for both trainers (default: the policy)")
    p.add_argument("--workdir", default=".rlhf/bench")
    p.add_argument("--answers", choices=["policy", "world"], default="policy")
    p.add_argument("--prompts", type=int, default=400, help="world prompts (400 shares the sampled answers with reward_quality.py)")
    p.add_argument("--answers-per-prompt", type=int, default=4)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--heldout-fraction", type=float, default=0.15)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16, help="pairs per optimizer step")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--replay-fraction", type=float, default=0.5)
    p.add_argument("--dropout", type=float, default=TrainSettings.model_fields["dropout"].default,
                   help="ours: dropout while training (default: the trainer's default, as RLHF_REWARD_DROPOUT's); "
                        "TRL turns dropout off, so 0 compares the two with the same model")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    result = run(args)
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
