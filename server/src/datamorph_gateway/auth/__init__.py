"""Who may call, and what they may do (docs/security.md, "Authentication").

- ``credentials``: what every verifier returns (``Verified``) or raises (``AuthError``);
- ``jwt``: OAuth 2 / OIDC bearer tokens, verified against a JWKS;
- ``aws_iam``: presigned ``sts:GetCallerIdentity`` requests (Lambdas, no shared secret).
"""
