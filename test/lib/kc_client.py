"""test/lib/kc_client.py - what the tests and benchmarks do as clients of kc-gateway, written once.

token(): an HS256 JWT signed like `kc-gateway --issue-token` (sub, role, exp), or one of the
broken kinds the gateway must refuse (alg none or HS512, no exp, another secret, extra or
wrong-typed claims). error_code(): the code of a gateway's JSON error body.

Import it with the folder on sys.path:
    sys.path.insert(0, os.path.join(ROOT, "test", "lib")); from kc_client import token
"""
import base64
import hashlib
import hmac
import json
import time

DIGESTS = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub, role=None, ttl=3600, alg="HS256", secret=None, with_exp=True, claims=None, iat=None):
    """A JWT for subject sub, signed with secret (required unless alg is "none")."""
    body = {"sub": sub}
    if role:
        body["role"] = role
    if with_exp:
        body["exp"] = int(time.time()) + ttl
    if iat is not None:
        body["iat"] = iat
    body.update(claims or {})
    signing = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + b64url(json.dumps(body).encode())
    if alg == "none":
        return signing + "."
    if secret is None:
        raise ValueError("token(): a secret is needed to sign with " + alg)
    return signing + "." + b64url(hmac.new(secret.encode(), signing.encode(), DIGESTS[alg]).digest())


def error_code(body):
    """The "code" of a {"error":{"code":…}} body (bytes or str), None for anything else."""
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
