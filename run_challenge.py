"""Judge a submission locally: python run_challenge.py CHALLENGE [options]; --help for all."""

import os
import sys

# Set before torch loads: when a worker that held CUDA IPC handles is killed (a crash, a
# timeout), torch warns at exit after the report's last line; the verdict already says it.
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

from judge.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
