"""``python -m sdsd.options --markdown`` prints the options reference; ``--check FILE`` validates a file."""

import argparse
import json

from sdsd.errors import cli_main
from sdsd.options import load, markdown_reference


@cli_main
def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sdsd.options", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the options reference as Markdown")
    parser.add_argument("--check", metavar="FILE", help="validate an option file and print it resolved")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key")
    args = parser.parse_args()
    if args.check:
        print(json.dumps(load(args.check, args.set), indent=2, default=str))
    else:
        print(markdown_reference())


if __name__ == "__main__":
    main()
