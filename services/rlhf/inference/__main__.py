"""`python -m rlhf.inference`: the same as `rlhf serve inference`."""
import sys

from rlhf.inference.service import main

sys.exit(main())
