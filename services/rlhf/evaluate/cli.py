"""`rlhf evaluate --policy DIR --preference module:function --prompts FILE [--json]`.

Samples one answer per held-out prompt with the serving sampling settings
(the inference service's defaults, env overrides included, unless given here),
scores them with the given preference, and prints mean score and thumbs-up
rate with 95% confidence intervals. With `--json`: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import transformers

from rlhf.evaluate.core import PreferenceError, Sampling, evaluate_dir
from rlhf.models.policy import PolicyLoadError
from rlhf.world.files import DataError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="HF model directory of the policy")
    p.add_argument("--preference", default="rlhf.simulate.preferences:default_preference",
                   help="importable module:function (prompt, answer, scenario) -> [0, 1]")
    p.add_argument("--prompts", required=True, help="held-out prompts JSONL (prompts.jsonl of `rlhf world generate`)")
    p.add_argument("--n", "--limit", dest="limit", type=int, default=0, help="evaluate only the first N prompts (0: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--temperature", type=float, help="override the served temperature")
    p.add_argument("--top-p", type=float, help="override the served top-p")
    p.add_argument("--max-new-tokens", type=int, help="override the served max_new_tokens")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    transformers.utils.logging.disable_progress_bar()
    sampling = Sampling.served()
    overrides = {k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p), ("max_new_tokens", args.max_new_tokens)) if v is not None}
    sampling = replace(sampling, **overrides)
    try:
        result = evaluate_dir(args.policy, args.preference, args.prompts, sampling=sampling, seed=args.seed,
                              limit=args.limit or None, threads=args.threads)
    except (DataError, PolicyLoadError, PreferenceError) as exc:
        print(f"rlhf evaluate: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    lo, hi = result["ci95"]
    ulo, uhi = result["thumbs_up_ci95"]
    print(f"policy          {args.policy}")
    print(f"preference      {args.preference}")
    print(f"prompts         {result['n']}")
    print(f"mean score      {result['mean_score']:.3f}  (95% CI {lo:.3f}-{hi:.3f})")
    print(f"thumbs-up rate  {result['thumbs_up_rate']:.1%}  (95% CI {ulo:.1%}-{uhi:.1%})")
    print(f"well-formed     {result['well_formed']:.1%}   best variant {result['best_share']:.1%}")
    return 0
