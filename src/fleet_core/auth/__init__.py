"""Identity for the headless API: ES256 signing keys (rotated, encrypted at rest) and tokens."""

from fleet_core.auth.keys import KeyInfo, KeyStore
from fleet_core.auth.tokens import AUDIENCE, ISSUER, Claims, issue_token, verify_token

__all__ = ["AUDIENCE", "ISSUER", "Claims", "KeyInfo", "KeyStore", "issue_token", "verify_token"]
