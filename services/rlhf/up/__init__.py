"""`rlhf up` and `rlhf loop-eval`: the whole system on one machine."""
