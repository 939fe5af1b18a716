"""online-rlhf: a chat assistant that learns from its own users.

OMP_WAIT_POLICY=PASSIVE is set here, before any module loads torch: with
OpenMP's default spin-waiting, torch's worker threads burn their time slices
spinning whenever cores are shared (the services, simulated users and
learners of one machine; a busy CI box). Measured on 2 shared cores: one PPO
iteration of the small policy took 5-17 s with spinning threads and 0.17 s
with passive waiting. An explicit setting in the environment wins.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
