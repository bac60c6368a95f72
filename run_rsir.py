"""``python run_rsir.py --model=SASRec --dataset=amazon-beauty``: the ``rsir`` command, from a checkout.

The command lives in :mod:`recbole_rsir.cli`.
"""
import sys

from recbole_rsir.cli import main

if __name__ == "__main__":
    sys.exit(main())
