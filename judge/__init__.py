"""The local judge: loads challenges, runs submissions in a worker, checks and times them."""

import sys

from judge.challenges import CHALLENGES_DIR

# challenge files import `core.challenge_base`, as in the public challenge set
if str(CHALLENGES_DIR) not in sys.path:
    sys.path.insert(0, str(CHALLENGES_DIR))
