"""bench/home/tokens.py - one student token per id, for the home benchmark's hit run.

Usage: tokens.py SECRET IDS_FILE OUT_FILE
Writes "id token" lines: HS256 tokens with the claims kc-gateway --issue-token gives a
student (sub, role, iat, exp one day ahead), signed with SECRET. Minting them here takes
a second for 10,000 ids where one kc-gateway process per token would take over a minute;
the gateway verifies them like any other, once each: its table of verified tokens
(--token-cache, 65,536 by default) holds them all, as it would a real working set."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "lib"))
from kc_client import token  # noqa: E402


def main():
    secret, ids_file, out_file = sys.argv[1:4]
    now = int(time.time())
    with open(ids_file) as f, open(out_file, "w") as out:
        for line in f:
            sid = line.strip()
            if sid:
                out.write("%s %s\n" % (sid, token(sid, "student", ttl=86400, secret=secret, iat=now)))


if __name__ == "__main__":
    main()
