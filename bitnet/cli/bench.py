"""`bitnet-bench`: the engine's C++ benchmark (tools/bitnet_bench.cpp), run with the given flags.

The wheel carries the binary in bitnet/bin/; from a checkout it is the newest build/*/bin/
bitnet-bench. This entry only finds it and replaces itself with it (exec), so flags, output and
exit status are the program's own.
"""

from __future__ import annotations

import os
import sys

from bitnet import paths
from bitnet.cli.common import fail


def main(argv: list[str] | None = None) -> int:
    binary = paths.bench_binary()
    if binary is None:
        return fail("bitnet-bench is not built: run `python setup_env.py` in the repository, or install the "
                    "package (`pip install .`)")
    args = sys.argv[1:] if argv is None else list(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, [str(binary), *args])
    return 1  # not reached: execv replaces this process or raises OSError


if __name__ == "__main__":
    sys.exit(main())
