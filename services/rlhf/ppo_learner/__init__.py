"""The PPO learner: RLHF step 3 on production prompts (service and offline command).

OMP_WAIT_POLICY=PASSIVE: with OpenMP's default spin-waiting, torch's worker
threads burn their time slices spinning whenever the cores are shared (other
services, other workers, a busy CI box): on 2 shared cores one PPO iteration
of a small model measured 5-17 s with 2 spinning threads and 0.17 s with
passive waiting. It must be set before torch loads libgomp, hence here, in
the package that both `rlhf serve ppo-learner` and `rlhf ppo` import first.
An explicit setting in the environment wins.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
