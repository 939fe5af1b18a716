"""Generated from protos/rlhf/v1 by scripts/gen_protos.py. Do not edit."""
