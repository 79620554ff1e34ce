"""`python -m bitnet.server`: the same as run_inference_server.py."""

import sys

from bitnet.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
