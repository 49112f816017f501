"""Judge a submission locally: python run_challenge.py CHALLENGE [options]; --help for all."""

import sys

from judge.cli import main

if __name__ == "__main__":
    sys.exit(main())
