"""Key pairs in the platform's format: base64 PKCS#8 DER private key, base64 X.509 public key."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path


def generate_key_pair(bits: int = 1024) -> tuple[str, str]:
    """A new RSA key pair ``(privateKey, pubKey)`` as ``applyApi`` returns them (RSA-1024 there)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(private_der).decode(), base64.b64encode(public_der).decode()


def load_or_create(path: str | os.PathLike[str], bits: int = 1024) -> dict[str, str]:
    """Load ``{"apiKey", "privateKey", "pubKey"}`` from a JSON file, or create it (mode 0600)."""
    import uuid

    file = Path(path)
    if file.exists():
        data = json.loads(file.read_text())
        if not {"apiKey", "privateKey", "pubKey"} <= data.keys():
            raise ValueError(f"{file} must hold apiKey, privateKey and pubKey")
        return {k: str(data[k]) for k in ("apiKey", "privateKey", "pubKey")}
    private, public = generate_key_pair(bits)
    data = {"apiKey": uuid.uuid4().hex, "privateKey": private, "pubKey": public}
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    return data
