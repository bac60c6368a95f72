"""``python -m recbole_rsir.schema --yaml`` / ``--markdown`` / ``--markdown-recbole``: what is rendered from the schema."""
import argparse

from recbole_rsir.schema import render_markdown, render_yaml


def main(argv=None):
    parser = argparse.ArgumentParser(description="Render the key schema.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--yaml", action="store_true", help="properties/overall.yaml")
    what.add_argument("--markdown", action="store_true", help="properties/README.md's table of this package's keys")
    what.add_argument("--markdown-recbole", action="store_true", help="properties/README.md's table of RecBole's keys")
    args = parser.parse_args(argv)
    print(render_yaml() if args.yaml else render_markdown(recbole=args.markdown_recbole), end="")


if __name__ == "__main__":
    main()
