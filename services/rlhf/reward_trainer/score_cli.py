"""`rlhf rm-score`: score prompt/answer pairs with a reward-model version, for operators.

    rlhf rm-score --prompt "Where is order 12345?" --answer "Hi Anna, ..." --answer "Go away."
    rlhf rm-score --version 3 --jsonl samples.jsonl --json
    rlhf rm-score --model-dir .rlhf/reward-trainer/ckpt-000012/model --prompt ... --answer ...

The version comes from the weight store in Redis (`REDIS_URL`; the current
one unless `--version`), verified by its checksum like any reader does; or
from a local model directory. `--jsonl` reads lines `{"prompt": str,
"answer": str}` (or `"messages"` ending with the user's turn instead of
`"prompt"`). Prints a table, or one JSON object with `--json`. A model with a
relevance prior also shows its part of each score (weight * cos(request, answer)).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rlhf.common.settings import RedisSettings, SettingsError, load
from rlhf.models.rated import Side


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--version", type=int, default=None, help="reward-model version in the weight store (default: current)")
    src.add_argument("--model-dir", default=None, help="score with a local HF model directory instead of the weight store")
    p.add_argument("--prompt", default=None, help="the user's message")
    p.add_argument("--answer", action="append", default=[], help="an answer to score (repeat to compare several)")
    p.add_argument("--jsonl", default=None, help='file of {"prompt"|"messages", "answer"} lines to score')
    p.add_argument("--max-length", type=int, default=256, help="token budget (the start of long prompts is cut)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _sides(args: argparse.Namespace) -> list[Side]:
    sides = []
    if args.prompt is not None:
        if not args.answer:
            raise ValueError("--prompt needs at least one --answer")
        sides += [Side(prompt=(("user", args.prompt),), answer=a) for a in args.answer]
    if args.jsonl:
        path = Path(args.jsonl)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
                sides.append(Side(prompt=tuple((m["role"], m["content"]) for m in messages), answer=row["answer"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: expected {{\"prompt\" or \"messages\", \"answer\"}}: {exc}") from None
    if not sides:
        raise ValueError("nothing to score: give --prompt with --answer, or --jsonl")
    return sides


def _score(model_dir: str | Path, sides: list[Side], max_length: int) -> tuple[list[float], list[float] | None]:
    """Scores, and the relevance prior's part of each (None when the model has no prior)."""
    from transformers.utils import logging as hf_logging

    from rlhf.models.reward import RewardModel  # torch import only once arguments are valid

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rm = RewardModel.from_pretrained(model_dir, max_length)
    encoded = rm.encode(sides)
    relevance = None if rm.relevance is None else [rm.relevance.weight.item() * e.relevance for e in encoded]
    return rm.score_encoded(encoded).tolist(), relevance


def run(args: argparse.Namespace) -> int:
    try:
        sides = _sides(args)
    except (ValueError, OSError) as exc:
        print(f"rlhf rm-score: {exc}", file=sys.stderr)
        return 2
    version, metrics = None, {}
    if args.model_dir:
        if not (Path(args.model_dir) / "config.json").exists():
            print(f"rlhf rm-score: {args.model_dir} is not a model directory (no config.json)", file=sys.stderr)
            return 2
        try:
            scores, relevance = _score(args.model_dir, sides, args.max_length)
        except (ValueError, OSError) as exc:  # e.g. its relevance encoder is missing or another one
            print(f"rlhf rm-score: {exc}", file=sys.stderr)
            return 1
    else:
        import redis

        from rlhf.common.registry import VersionNotFound, WeightStore

        try:
            store = WeightStore(load(RedisSettings), "reward")
            with tempfile.TemporaryDirectory(prefix="rlhf-rm-score-") as tmp:
                manifest = store.fetch_to_hf_dir(tmp, args.version)
                version, metrics = manifest.version, manifest.metrics
                scores, relevance = _score(tmp, sides, args.max_length)
        except (SettingsError, VersionNotFound, redis.RedisError, ValueError, OSError) as exc:
            print(f"rlhf rm-score: {exc}", file=sys.stderr)
            return 1
    rows = [{"prompt": s.prompt[-1][1], "answer": s.answer, "score": round(sc, 6)} for s, sc in zip(sides, scores)]
    if relevance is not None:
        for r, part in zip(rows, relevance):
            r["relevance"] = round(part, 6)
    if args.json:
        print(json.dumps({"version": version, "model_dir": args.model_dir, "heldout_accuracy": metrics.get("accuracy"),
                          "scores": rows}))
        return 0
    source = f"version {version} (held-out accuracy {metrics.get('accuracy', float('nan')):.3f})" if version else args.model_dir
    print(f"reward model: {source}")
    if relevance is None:
        print(f"{'score':>9}  answer")
        for r in rows:
            print(f"{r['score']:>9.4f}  {r['answer'][:100]}")
    else:
        print(f"{'score':>9}  {'of which relevance':>18}  answer")
        for r in rows:
            print(f"{r['score']:>9.4f}  {r['relevance']:>18.4f}  {r['answer'][:100]}")
    return 0
