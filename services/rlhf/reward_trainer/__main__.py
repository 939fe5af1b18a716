"""`python -m rlhf.reward_trainer`: same as `rlhf serve reward-trainer`."""
import sys

from rlhf.reward_trainer.service import main

sys.exit(main())
