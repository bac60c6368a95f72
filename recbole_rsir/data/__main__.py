"""``python -m recbole_rsir.data convert FILE --name NAME [--out DIR]``."""
import argparse
import sys

from recbole_rsir.data.convert import convert
from recbole_rsir.errors import InputError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_rsir.data")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser(
        "convert",
        help="turn a one-user-per-line file (optionally with tab-separated day gaps) "
        "into RecBole atomic files",
    )
    conv.add_argument("file", help="user item item ... [\\tgap gap ...] per line")
    conv.add_argument("--name", required=True, help="dataset name, as in --dataset=NAME")
    conv.add_argument("--out", default="dataset", help="RecBole data_path to write into")
    args = parser.parse_args(argv)
    try:
        path = convert(args.file, args.name, args.out)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
