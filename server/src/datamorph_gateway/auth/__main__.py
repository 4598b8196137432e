"""``python -m datamorph_gateway.auth new-key NAME``: a new API key, printed once.

The key and the lines to add to ``AUTH_POLICY_FILE`` are printed to stdout; the key is
shown only here (the policy keeps its hash), so hand it to the caller straight away.
"""

from __future__ import annotations

import argparse
import sys

from datamorph_gateway.auth.keys import key_hash, new_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamorph_gateway.auth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("new-key", help="make a new API key for a principal")
    make.add_argument("name", help="the principal's name in the policy")
    args = parser.parse_args(argv)
    key = new_key()
    print(f"API key for {args.name} (shown once; send it as x-api-key):")
    print(f"  {key}")
    print("Policy (AUTH_POLICY_FILE), under principals:")
    print(f"  - name: {args.name}")
    print(f'    api_keys: ["{key_hash(key)}"]')
    print('    allow: ["ExecuteQuery:read", GetSchemas, GetData]   # what it may call')
    return 0


if __name__ == "__main__":
    sys.exit(main())
