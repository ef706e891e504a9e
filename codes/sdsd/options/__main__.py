"""``python -m sdsd.options --markdown`` prints the options reference; ``--check FILE`` validates a file."""

import argparse
import json

from sdsd.errors import cli_main
from sdsd.options import load, markdown_reference, update_readme


@cli_main
def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sdsd.options", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the options reference as Markdown")
    parser.add_argument("--check", metavar="FILE", help="validate an option file and print it resolved")
    parser.add_argument("--update-readme", metavar="README", help="rewrite the README's options reference")
    parser.add_argument("--train", action="store_true", help="with --check: also apply the training rules")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="override a key")
    args = parser.parse_args()
    if args.update_readme:
        current = update_readme(args.update_readme)
        print(f"{args.update_readme}: options reference {'already current' if current else 'updated'}")
    elif args.check:
        print(json.dumps(load(args.check, args.set, is_train=args.train), indent=2, default=str))
    else:
        print(markdown_reference())


if __name__ == "__main__":
    main()
