"""Objects with additional checksums, made with a plain boto3 client as our uploads and other tools make them."""

from __future__ import annotations

import base64
import zlib

from awscrt import checksums as crt

PART = 5 * 1024**2


def crc64(data: bytes) -> str:
    """S3's base64 CRC64NVME of ``data``."""
    return base64.b64encode(crt.crc64nvme(data).to_bytes(8, "big")).decode()


def crc32(data: bytes) -> str:
    """S3's base64 CRC32 of ``data``."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def crc32c(data: bytes) -> str:
    """S3's base64 CRC32C of ``data``."""
    return base64.b64encode(crt.crc32c(data).to_bytes(4, "big")).decode()


CRC32S = {"CRC32": crc32, "CRC32C": crc32c}
#: S3's base64 full-object checksum of some bytes, by algorithm.
CHECKSUMS = {"CRC64NVME": crc64, **CRC32S}


def upload_composite_crc32(
    client, bucket: str, key: str, data: bytes, part_size: int = PART, algorithm: str = "CRC32"
) -> None:
    """As ``aws s3 cp`` and boto3's ``upload_file`` (s3transfer ≤ 0.19) do: a COMPOSITE CRC32 (or CRC32C)
    multipart upload."""
    _multipart(client, bucket, key, data, part_size, algorithm)


def upload_full_object(
    client, bucket: str, key: str, data: bytes, part_size: int = PART, algorithm: str = "CRC64NVME"
) -> None:
    """A full-object checksum, as our uploads (CRC64NVME) and newer s3transfer (CRC32, CRC32C) make it: a single
    PUT, or a ``FULL_OBJECT`` multipart upload with the whole file's checksum declared at completion."""
    if len(data) <= part_size:
        client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm=algorithm)
        return
    _multipart(
        client,
        bucket,
        key,
        data,
        part_size,
        algorithm,
        ChecksumType="FULL_OBJECT",
        **{f"Checksum{algorithm}": CHECKSUMS[algorithm](data)},
    )


def part_crcs(data: bytes, part_size: int, algorithm: str = "CRC32") -> list[tuple[int, str]]:
    """Each part's size and CRC, as S3's GetObjectAttributes lists them (:class:`tests.faults_sse.ListObjectParts`)."""
    return [
        (len(data[i : i + part_size]), CRC32S[algorithm](data[i : i + part_size]))
        for i in range(0, len(data), part_size)
    ]


def _multipart(
    client, bucket: str, key: str, data: bytes, part_size: int, algorithm: str, **complete
) -> None:
    """A multipart upload declaring ``algorithm`` on every part; ``complete``: the completion's checksum
    arguments (a FULL_OBJECT upload names its type at creation and its value at completion)."""
    kind = {"ChecksumType": complete["ChecksumType"]} if "ChecksumType" in complete else {}
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm, **kind)[
        "UploadId"
    ]
    field = f"Checksum{algorithm}"
    parts = []
    for number, offset in enumerate(range(0, len(data), part_size), start=1):
        answer = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload,
            PartNumber=number,
            Body=data[offset : offset + part_size],
            ChecksumAlgorithm=algorithm,
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"], field: answer[field]})
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}, **complete
    )
