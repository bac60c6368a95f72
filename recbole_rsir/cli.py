"""Run RSIR on a RecBole dataset: ``rsir --model=SASRec --dataset=amazon-beauty``.

Any RecBole or RSIR config key can follow as ``--key=value``; ``--config_files`` takes
space-separated yaml files, as in RecBole's run_recbole.py. Bad input and a non-finite
training loss each stop with one line on stderr and an exit code of their own.
"""
import argparse
import sys

from recbole_rsir import distributed
from recbole_rsir.errors import InputError
from recbole_rsir.quick_start import run_rsir
from recbole_rsir.trainer.trainer import NonFiniteLossError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="SASRec")
    parser.add_argument("--dataset", "-d", default="amazon-beauty")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    args, rest = parser.parse_known_args(argv)
    files = args.config_files.split() if args.config_files else None
    try:
        run_rsir(args.model, args.dataset, config_file_list=files, cmd_args=rest)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    finally:
        distributed.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
