"""`python -m raygan.tune CONFIG ...` is `raygan tune CONFIG ...`: the CLI parses, validates and runs the sweep.

python -m raygan.tune tune_configs/smoke.yaml --json
"""

import sys

from raygan.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
