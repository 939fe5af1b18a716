"""The PPO learner: RLHF step 3 on production prompts (service and offline command).

(OMP_WAIT_POLICY is set for the whole package in `rlhf/__init__.py`.)
"""
