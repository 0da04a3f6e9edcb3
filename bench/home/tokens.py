"""bench/home/tokens.py - one student token per id, for the home benchmark's hit run.

Usage: tokens.py SECRET IDS_FILE OUT_FILE
Writes "id token" lines: HS256 tokens with the claims kc-gateway --issue-token gives a
student (sub, role, iat, exp one day ahead), signed with SECRET. Minting them here takes
a second for 10,000 ids where one kc-gateway process per token would take over a minute;
the gateway verifies them like any other (its per-thread table of verified tokens holds 64,
so most requests of a run over thousands of students pay the HMAC check)."""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def token(secret, sub, now):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = b64(json.dumps({"exp": now + 86400, "iat": now, "role": "student", "sub": sub},
                            separators=(",", ":")).encode())
    signing = head + b"." + claims
    sig = b64(hmac.new(secret.encode(), signing, hashlib.sha256).digest())
    return (signing + b"." + sig).decode()


def main():
    secret, ids_file, out_file = sys.argv[1:4]
    now = int(time.time())
    with open(ids_file) as f, open(out_file, "w") as out:
        for line in f:
            sid = line.strip()
            if sid:
                out.write("%s %s\n" % (sid, token(secret, sid, now)))


if __name__ == "__main__":
    main()
