#!/usr/bin/env python3
"""Regenerate man/machina.env.5 and the EXIT STATUS list of man/machina.7 from the code.

Run after adding a variable or an exit code; a test fails while the shipped pages are stale.
"""

import pathlib
import sys

import _bootstrap  # noqa: F401  (finds the machina package: see scripts/_bootstrap.py)

from machina.ops.manpages import env_page, with_exit_codes

MAN = pathlib.Path(__file__).resolve().parent.parent / "man"


def main() -> int:
    (MAN / "machina.env.5").write_text(env_page())
    seven = MAN / "machina.7"
    seven.write_text(with_exit_codes(seven.read_text()))
    print(f"wrote {MAN / 'machina.env.5'} and the exit codes of {seven}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
