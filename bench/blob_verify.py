"""What the SHA-256 check of every whole-body read costs (storage/integrity.py): microseconds
per body of typical sizes, next to the time one core needs to encrypt the same bytes with
AES-GCM as TLS would. Prints figures; run with PYTHONPATH=src.

On the reference machine: 100 KiB 153 us check vs 21 us AES-128-GCM; 1 MiB 1.5 ms vs 0.27 ms."""

from __future__ import annotations

import hashlib
import os
import ssl
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailstead.storage.integrity import Integrity

SIZES = (4 * 1024, 100 * 1024, 1024 * 1024, 10 * 1024 * 1024)


def per_call(fn: object, data: bytes, budget: float = 0.5) -> float:
    """Seconds per call of ``fn(data)``, over about ``budget`` seconds."""
    assert callable(fn)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget:
        fn(data)
        calls += 1
    return elapsed / calls


def main() -> None:
    integrity = Integrity()
    aead = AESGCM(AESGCM.generate_key(bit_length=128))
    nonce = os.urandom(12)
    print(f"{ssl.OPENSSL_VERSION}")
    for size in SIZES:
        data = os.urandom(size)
        name = hashlib.sha256(data).hexdigest()
        check = per_call(lambda d, n=name: integrity.check_blob(n, d), data)
        tls = per_call(lambda d: aead.encrypt(nonce, d, None), data)
        print(f"{size // 1024:>6} KiB: check {check * 1e6:9.1f} us"
              f" ({size / check / 1e6:5.0f} MB/s); AES-128-GCM {tls * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
