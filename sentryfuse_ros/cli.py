"""The `sentryfuse` command line. Subcommands register themselves in ``COMMANDS``."""
import argparse
import sys

from sentryfuse_ros.core.errors import SentryFuseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='sentryfuse', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    from sentryfuse_ros import commands  # noqa: PLC0415  (keeps `sentryfuse --help` import-light)
    for register in commands.REGISTRY:
        register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SentryFuseError as exc:
        print(f'sentryfuse {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
