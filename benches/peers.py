#!/usr/bin/env python3
"""The peers a user would otherwise pick, on the data path (BENCHMARKS.md,
issue 18): Google Tink (AEAD AES128_GCM) and the AWS Encryption SDK (raw
AES keyring, AES-128), both called from Python, encrypting and decrypting
messages of 1 KiB, 16 KiB and 1 MiB with the key already in memory (as
keyserver's client does with a cached DEK).

Prints one line per figure: `peer op size MB/s` (median of 5 runs, each at
least 0.5 s). Run inside a virtualenv with `pip install tink
aws-encryption-sdk` (benches/data_path.sh makes one).
"""

import os
import statistics
import sys
import time

SIZES = [1 << 10, 16 << 10, 1 << 20]


def rate(op, size):
    """Median MB/s of `op` (one message of `size` bytes per call)."""
    runs = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while True:
            op()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= 0.5:
                break
        runs.append(n * size / elapsed / 1e6)
    return statistics.median(runs)


def tink_figures():
    import tink
    from tink import aead

    aead.register()
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES128_GCM)
    primitive = handle.primitive(aead.Aead)
    for size in SIZES:
        data = os.urandom(size)
        sealed = primitive.encrypt(data, b"")
        assert primitive.decrypt(sealed, b"") == data
        yield "tink", "encrypt", size, rate(lambda: primitive.encrypt(data, b""), size)
        yield "tink", "decrypt", size, rate(lambda: primitive.decrypt(sealed, b""), size)


def aws_sdk_figures():
    import aws_encryption_sdk
    from aws_encryption_sdk.identifiers import CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

    class Provider(RawMasterKeyProvider):
        provider_id = "keyserver-bench"

        def _get_raw_key(self, key_id):
            return WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_128_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=b"\x07" * 16,
                wrapping_key_type=EncryptionKeyType.SYMMETRIC,
            )

    provider = Provider()
    provider.add_master_key(b"bench")
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    for size in SIZES:
        data = os.urandom(size)
        sealed, _ = client.encrypt(source=data, key_provider=provider)
        opened, _ = client.decrypt(source=sealed, key_provider=provider)
        assert opened == data
        yield "aws-encryption-sdk", "encrypt", size, rate(
            lambda: client.encrypt(source=data, key_provider=provider), size
        )
        yield "aws-encryption-sdk", "decrypt", size, rate(
            lambda: client.decrypt(source=sealed, key_provider=provider), size
        )


def main():
    missing = 0
    for figures in (tink_figures, aws_sdk_figures):
        try:
            for peer, op, size, mbs in figures():
                print(f"{peer} {op} {size} {mbs:.1f}", flush=True)
        except ImportError as e:
            print(f"unavailable: {e}", file=sys.stderr)
            missing += 1
    return 1 if missing == 2 else 0


if __name__ == "__main__":
    sys.exit(main())
