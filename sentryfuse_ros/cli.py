"""The `sentryfuse` command line. Subcommands register themselves in ``COMMANDS``."""
import argparse
import sys

from sentryfuse_ros.core.errors import SentryFuseError


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``sentryfuse train: error: ...``), without the usage block."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog='sentryfuse', description=__doc__)
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
        print(f'sentryfuse {args.command}: error: {_one_line(exc)}', file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only folder, a full disk, a missing file: named, not a traceback
        where = f' {exc.filename!r}' if exc.filename else ''
        print(f'sentryfuse {args.command}: error: cannot access{where}: {exc.strerror or exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _one_line(exc: Exception) -> str:
    """The error's text on one line (a message quoting a multi-line cause is joined)."""
    return ' '.join(str(exc).split())


if __name__ == '__main__':
    sys.exit(main())
