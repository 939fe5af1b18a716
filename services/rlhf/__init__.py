"""online-rlhf: a chat assistant that learns from its own users.

OMP_WAIT_POLICY=PASSIVE is set here, before any module loads torch: with
OpenMP's default spin-waiting, torch's worker threads burn their time slices
spinning whenever cores are shared (the services, simulated users and
learners of one machine; a busy CI box). Measured on 2 shared cores: one PPO
iteration of the small policy took 5-17 s with spinning threads and 0.17 s
with passive waiting. An explicit setting in the environment wins.

Passive waiting has a price where a process has its cores to itself: every
parallel region wakes sleeping threads. There, `GOMP_SPINCOUNT=10000` (spin
briefly, then sleep; it overrides the passive policy) made a PPO iteration of
the small policy 1.25x faster (0.58 -> 0.46 s, 2 cores); with two such
processes on the same 2 cores it made both 2.7x slower (0.83 -> 2.21 s). So it
is an operator's choice for dedicated cores (docs/ppo.md), not a default.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
