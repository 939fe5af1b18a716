"""`rlhf sft --data FILE --out DIR`: supervised fine-tuning on demonstrations (RLHF step 1).

Fresh start: trains a BPE tokenizer on the data's text and a GPT-2-style
policy. `--init DIR` starts from any local HF causal-LM directory instead.
`--resume` continues an interrupted run from `DIR/checkpoint`. Writes a HF
model directory (safetensors), `loss.png` and `sft_report.json`.
Bad input prints one clear line and exits with code 2.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import transformers

from rlhf.models.policy import PolicyLoadError, PolicyShape, save_policy
from rlhf.sft.config import SFTConfig
from rlhf.sft.data import DataError, load_conversations
from rlhf.sft.report import format_report, plot_loss, sample_report
from rlhf.sft.trainer import (
    CHECKPOINT_DIR,
    encode_all,
    has_checkpoint,
    initial_policy,
    load_checkpoint,
    read_config,
    train,
    write_config,
)
from rlhf.world.files import load_prompts, prompts_from_conversations
from rlhf.world.generate import PROMPTS_FILE

_TRAIN_FLAGS = ("seed", "steps", "batch_size", "lr", "warmup_steps", "max_len", "vocab_size", "checkpoint_every", "report_samples", "threads")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="demonstrations JSONL (chat format, see docs/world.md)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--init", help="start from this local HF causal-LM directory instead of a fresh model")
    p.add_argument("--prompts", help=f"held-out prompts JSONL for the sample report (default: {PROMPTS_FILE} beside --data)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint with the run's saved settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final report as one JSON object")
    for name in _TRAIN_FLAGS:
        f = SFTConfig.model_fields[name]
        p.add_argument("--" + name.replace("_", "-"), type=type(f.default), default=f.default, help=(f.description or "").replace("%", "%%"))
    for name, f in PolicyShape.model_fields.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, default=f.default, help=f"(fresh model) {f.description}".replace("%", "%%"))


def _config(args: argparse.Namespace) -> SFTConfig:
    shape = PolicyShape(**{k: getattr(args, k) for k in PolicyShape.model_fields})
    return SFTConfig(shape=shape, **{k: getattr(args, k) for k in _TRAIN_FLAGS})


def _report_prompts(args: argparse.Namespace, rows: list[dict]) -> list[dict]:
    if args.prompts:
        return load_prompts(args.prompts)
    beside = Path(args.data).with_name(PROMPTS_FILE)
    return load_prompts(beside) if beside.is_file() else prompts_from_conversations(rows)


def run(args: argparse.Namespace) -> int:
    transformers.utils.logging.disable_progress_bar()  # one progress bar (ours), not one per save/load
    out = Path(args.out)
    try:
        rows = load_conversations(args.data)
        prompts = _report_prompts(args, rows)
        if args.resume and has_checkpoint(out):
            cfg = read_config(out)
            model, tokenizer, opt, start, history = load_checkpoint(out, cfg)
            print(f"resuming from {out / CHECKPOINT_DIR} at step {start}/{cfg.steps}", file=sys.stderr)
        else:
            cfg = _config(args)
            write_config(out, cfg, args.data, args.init)
            model, tokenizer = initial_policy(cfg, rows, args.init)
            opt, start, history = None, 0, None
    except (DataError, PolicyLoadError, ValueError) as exc:
        print(f"rlhf sft: error: {exc}", file=sys.stderr)
        return 2
    max_len = min(cfg.max_len, model.config.n_positions if hasattr(model.config, "n_positions") else cfg.max_len)
    examples = encode_all(rows, tokenizer, max_len)
    history = train(model, tokenizer, examples, cfg, out, opt=opt, start_step=start, history=history, progress=not args.no_progress)
    save_policy(model, tokenizer, out)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # the run is complete; the final model supersedes it
    plot_loss(history.losses, out / "loss.png")
    doc = {
        "steps": cfg.steps,
        "train_seconds": round(history.seconds, 1),
        "train_cpu_seconds": round(history.cpu_seconds, 1),
        "tokens_per_second": round(history.tokens / max(history.seconds, 1e-9)),
        "final_loss": sum(history.losses[-20:]) / len(history.losses[-20:]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "conversations": len(rows),
    }
    if cfg.report_samples and prompts:
        doc["samples"] = sample_report(model, tokenizer, prompts, cfg.report_samples, cfg.seed)
    (out / "sft_report.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"trained {cfg.steps} steps in {doc['train_seconds']} s wall, {doc['train_cpu_seconds']} s CPU "
              f"({doc['tokens_per_second']} tokens/s), final loss {doc['final_loss']:.3f}")
        if "samples" in doc:
            print(format_report(doc["samples"]))
        print(f"policy written to {out}")
    return 0
