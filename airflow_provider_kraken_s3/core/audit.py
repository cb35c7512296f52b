"""Audit of recorded backups: for one ``upload_done`` record, what S3 should hold against what it answered.

A person (or a nightly DAG) wants one list: every object that is fine, missing, different from the record,
present under a set's folder without being in the inventory, or not checkable. The pieces:

1. :func:`plan_audit` — what to ask S3 for one record: the expected objects come from
   :func:`~.verdict.assess_raw_file` (the sensor's reading of a DONE record, itself built on
   the record's manifest, :func:`~.manifest.recorded_backup`), and a set (a ``.d`` folder, a
   ``.wiff`` set) is asked for with one listing of its folder (:func:`~.layout.backup_key`);
2. :func:`compare` — each expected object is judged by what S3 stores, without a byte being read
   (:mod:`.proof`): where the record names a checksum and S3 stores a comparable one, the checksum and the
   size decide (``proof: checksum``), whatever the ETag; otherwise the ETag rule of
   :func:`~.verdict.verify_objects` (:func:`~.decision.prove`, the rule the upload and the sensor use;
   ``proof: etag``), unless S3's headers say the object is encrypted with SSE-KMS or SSE-C: then its ETag is
   no digest of the bytes and the object *cannot be proven without download* (``unchecked``, with what to
   do). A listed object the inventory does not name is *extra*;
3. :class:`AuditSummary` counts findings; :func:`render_json_lines` and :func:`render_table` print them.

Pure module: no Airflow, boto3, MongoDB or I/O.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.etag import normalize_etag
from airflow_provider_kraken_s3.core.layout import backup_key
from airflow_provider_kraken_s3.core.proof import ProofKind, StoredProof, by_checksum, cannot_prove
from airflow_provider_kraken_s3.core.verdict import (
    ExpectedObject,
    Problem,
    ProblemKind,
    RawFileRecord,
    assess_raw_file,
    verify_objects,
)


class AuditFindingKind(str, enum.Enum):
    """What the audit found for one object (or one record)."""

    OK = "ok"  # proven: ETag and size as recorded
    MISSING = "missing"  # recorded, not in S3
    DIFFERENT = "different"  # in S3 with another ETag or size than recorded
    EXTRA = "extra"  # under a set's folder, but not in the inventory
    RECORD = "record"  # the record itself cannot be audited (no bucket, no recorded ETag, bad inventory)
    UNCHECKED = "unchecked"  # S3 could not be asked (an error, denied access): neither proof nor disproof


#: Field names of a finding in JSON lines, in this order; a stable interface for scripts.
FIELDS = (
    "kind",
    "raw_file_id",
    "bucket",
    "key",
    "path",
    "expected_etag",
    "found_etag",
    "expected_size",
    "found_size",
    "detail",
    "proof",
)

#: Words for the table's STATUS column: problems in capitals, so they stand out among the ok rows.
_LABELS = {
    AuditFindingKind.OK: "ok",
    AuditFindingKind.MISSING: "MISSING",
    AuditFindingKind.DIFFERENT: "DIFFERENT",
    AuditFindingKind.EXTRA: "EXTRA",
    AuditFindingKind.RECORD: "RECORD PROBLEM",
    AuditFindingKind.UNCHECKED: "NOT CHECKED",
}


@dataclass(frozen=True)
class AuditFinding:
    """One line of the audit: an object (``key``) of a raw file's backup, or the record as a whole."""

    kind: AuditFindingKind
    raw_file_id: str
    bucket: str | None = None
    key: str | None = None
    path: str | None = None  # the file_info path, for objects the inventory names
    expected_etag: str | None = None
    found_etag: str | None = None
    expected_size: int | None = None
    found_size: int | None = None
    detail: str = ""
    #: what decided an object's kind without reading it: ``checksum`` (S3's stored checksum against the
    #: record's) or ``etag`` (the ETag rule); None when nothing could (missing, unchecked, record problems)
    proof: str | None = None

    @property
    def ok(self) -> bool:
        return self.kind is AuditFindingKind.OK

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: every field of :data:`FIELDS`, ``null`` where unknown."""
        values = {name: getattr(self, name) for name in FIELDS}
        values["kind"] = self.kind.value
        return values


@dataclass(frozen=True)
class AuditTarget:
    """What to ask S3 about one record: a listing of ``folder`` for a set, else a HEAD per object."""

    raw_file_id: str
    bucket: str
    folder: str  # "" when each object is asked for with a HEAD
    objects: tuple[ExpectedObject, ...]


@dataclass(frozen=True)
class RecordAudit:
    """The findings of one record, in key order (expected objects first, then extras)."""

    raw_file_id: str
    findings: tuple[AuditFinding, ...]

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)


# --------------------------------------------------------------------------- one record


def plan_audit(record: RawFileRecord) -> AuditTarget | RecordAudit:
    """What S3 must be asked for ``record``, or its findings already when the record cannot be audited."""
    outcome = assess_raw_file(record)
    expected = outcome.expected
    if expected is not None and expected.bucket and expected.objects:
        # Objects without a recorded ETag are reported by compare(), beside the others' real state.
        return AuditTarget(
            raw_file_id=record.id,
            bucket=expected.bucket,
            folder=_set_folder(record, expected.objects),
            objects=expected.objects,
        )
    problems = expected.problems if expected is not None else ()
    findings = [
        AuditFinding(
            AuditFindingKind.RECORD, record.id, bucket=record.s3_bucket, key=problem.key, detail=str(problem)
        )
        for problem in problems
    ] or [AuditFinding(AuditFindingKind.RECORD, record.id, bucket=record.s3_bucket, detail=outcome.message)]
    return RecordAudit(record.id, tuple(findings))


def _set_folder(record: RawFileRecord, objects: Sequence[ExpectedObject]) -> str:
    """The folder of a set (``x.d/``, ``x.wiff/``, with the fallback project's prefix) as the record's objects
    name it (key = prefix + path); "" for a single object (a HEAD each, then)."""
    prefixes = {
        item.key[: len(item.key) - len(item.path or "")]
        for item in objects
        if item.path and item.key.endswith(item.path)
    }
    if len(prefixes) != 1 or len(objects) < 1:
        return ""
    prefix = prefixes.pop()
    folder = backup_key(record.id, {item.path or item.key: item.key for item in objects}, prefix=prefix)
    if not folder.endswith("/") or not all(item.key.startswith(folder) for item in objects):
        return ""
    return folder


def compare(target: AuditTarget, found: Mapping[str, RemoteObject | None]) -> RecordAudit:
    """Judge each expected object by what S3 answered (``found``: key → object, None or absent when missing).

    For a set, ``found`` is the whole listing of its folder: keys the inventory does not name are *extra*.
    """
    result = verify_objects(target.objects, found)
    problems: dict[str, list[Problem]] = {}
    for problem in result.problems:
        problems.setdefault(problem.key, []).append(problem)
    findings = []
    for item in sorted(target.objects, key=lambda item: item.key):
        # Notes read "<key>: <note>": metadata contradicting the inventory, shown but never a verdict.
        notes = [
            note.removeprefix(f"{item.key}: ") for note in result.notes if note.startswith(f"{item.key}: ")
        ]
        remote = found.get(item.key)
        stored = stored_proof(item, remote)
        if stored is not None and remote is not None:
            findings.append(_stored_finding(target, item, remote, stored, notes))
            continue
        findings.append(_object_finding(target, item, remote, problems.get(item.key, []), notes))
    if target.folder:
        expected = {item.key for item in target.objects}
        for key in sorted(set(found) - expected):
            remote = found[key]
            if remote is None:
                continue
            findings.append(
                AuditFinding(
                    AuditFindingKind.EXTRA,
                    target.raw_file_id,
                    bucket=target.bucket,
                    key=key,
                    found_etag=normalize_etag(remote.etag),
                    found_size=remote.size,
                    detail=f"under {target.folder} but not in the inventory of {target.raw_file_id}",
                )
            )
    return RecordAudit(target.raw_file_id, tuple(findings))


def _object_finding(
    target: AuditTarget,
    item: ExpectedObject,
    remote: RemoteObject | None,
    problems: Sequence[Problem],
    notes: Sequence[str],
) -> AuditFinding:
    kinds = {problem.kind for problem in problems}
    current = remote.version_id if remote is not None else None
    replaced = item.version_id is not None and current is not None and current != item.version_id
    if replaced and not problems:
        notes = [
            *notes,
            f"the key's current version {current} is not the recorded {item.version_id}: it was overwritten "
            "(same ETag and size); deep verify and restore still read the recorded version",
        ]
    if not problems and not replaced:
        kind = AuditFindingKind.OK
    elif ProblemKind.RECORD in kinds:
        kind = AuditFindingKind.RECORD
    elif ProblemKind.MISSING in kinds:
        kind = AuditFindingKind.MISSING
    else:
        kind = AuditFindingKind.DIFFERENT
    return AuditFinding(
        kind,
        target.raw_file_id,
        bucket=target.bucket,
        key=item.key,
        path=item.path,
        expected_etag=normalize_etag(item.etag) if item.etag else None,
        found_etag=normalize_etag(remote.etag) if remote is not None else None,
        expected_size=item.size,
        found_size=remote.size if remote is not None else None,
        detail="; ".join([*(str(problem) for problem in problems), *notes]),
        proof=ProofKind.ETAG.value if remote is not None and kind is not AuditFindingKind.RECORD else None,
    )


def stored_proof(item: ExpectedObject, remote: RemoteObject | None) -> StoredProof | None:
    """The verdict of what S3 stores when the ETag rule must not decide: the stored checksum, where the record
    names one and S3 keeps a comparable one; "cannot prove" where S3's headers say the object is encrypted
    with SSE-KMS or SSE-C (its ETag is no digest) and no checksum decides. None: the ETag rule decides."""
    if remote is None or not item.etag:
        return None
    decided = by_checksum(item.size, item.checksum, remote.checksum, remote.size)
    if decided is not None:
        return decided
    if not remote.encryption.etag_is_md5:
        return cannot_prove(remote.encryption, remote.checksum, item.checksum)
    return None


def needs_a_closer_look(item: ExpectedObject, listed: RemoteObject | None) -> bool:
    """Whether a listing's entry (ETag and size, no checksum, no encryption) cannot settle ``item``: the
    record names a checksum (S3's stored one is read with ``GetObjectAttributes``), or the ETag rule does not
    prove it (a HEAD tells whether the object is encrypted, so an opaque ETag is not called different)."""
    if listed is None:
        return False
    if item.checksum is not None:
        return True
    return not verify_objects([item], {item.key: listed}).ok


def _stored_finding(
    target: AuditTarget, item: ExpectedObject, remote: RemoteObject, stored: StoredProof, notes: Sequence[str]
) -> AuditFinding:
    current = remote.version_id
    replaced = item.version_id is not None and current is not None and current != item.version_id
    details = [stored.reason, *notes]
    if stored.proven is None:
        kind = AuditFindingKind.UNCHECKED
    elif not stored.proven:
        kind = AuditFindingKind.DIFFERENT
    elif replaced:
        kind = AuditFindingKind.DIFFERENT
        details.append(
            f"the key's current version {current} is not the recorded {item.version_id}: it was overwritten "
            "(same checksum and size); deep verify and restore still read the recorded version"
        )
    else:
        kind = AuditFindingKind.OK
    return AuditFinding(
        kind,
        target.raw_file_id,
        bucket=target.bucket,
        key=item.key,
        path=item.path,
        expected_etag=normalize_etag(item.etag) if item.etag else None,
        found_etag=normalize_etag(remote.etag),
        expected_size=item.size,
        found_size=remote.size,
        detail="; ".join(details),
        proof=stored.proof.value if stored.proof is not None else None,
    )


def not_checked(target: AuditTarget, reason: str) -> RecordAudit:
    """The record could not be checked (S3 did not answer properly, or refused): one finding saying why."""
    return RecordAudit(
        target.raw_file_id,
        (
            AuditFinding(
                AuditFindingKind.UNCHECKED,
                target.raw_file_id,
                bucket=target.bucket,
                key=target.folder or None,
                detail=f"could not check: {reason}",
            ),
        ),
    )


def bucket_missing(target: AuditTarget, reason: str) -> RecordAudit:
    """The record's bucket does not exist: every object is missing, and the finding says why."""
    audit = compare(target, {})
    return RecordAudit(
        target.raw_file_id, tuple(replace(finding, detail=reason) for finding in audit.findings)
    )


# --------------------------------------------------------------------------- many records


@dataclass
class AuditSummary:
    """Counts of findings over the records audited so far; ``ok`` when every finding is ok."""

    records: int = 0
    records_with_problems: int = 0
    counts: dict[AuditFindingKind, int] = field(default_factory=lambda: dict.fromkeys(AuditFindingKind, 0))

    def add(self, audit: RecordAudit) -> None:
        self.records += 1
        self.records_with_problems += not audit.ok
        for finding in audit.findings:
            self.counts[finding.kind] += 1

    @property
    def ok(self) -> bool:
        return self.records_with_problems == 0

    @property
    def wrong(self) -> int:
        """Findings showing a backup is not as recorded (missing, different, extra, record); not-checked
        ones are not among them: they say only that S3 could not be asked (try again)."""
        return sum(
            n
            for kind, n in self.counts.items()
            if kind not in (AuditFindingKind.OK, AuditFindingKind.UNCHECKED)
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: ``ok``, the record counts and one count per finding kind."""
        counts = self.counts
        return {
            "ok": self.ok,
            "records": self.records,
            "records_with_problems": self.records_with_problems,
            "objects_ok": counts[AuditFindingKind.OK],
            "missing": counts[AuditFindingKind.MISSING],
            "different": counts[AuditFindingKind.DIFFERENT],
            "extra": counts[AuditFindingKind.EXTRA],
            "record_problems": counts[AuditFindingKind.RECORD],
            "unchecked": counts[AuditFindingKind.UNCHECKED],
        }

    def describe(self) -> str:
        """One line: what was audited, the counts, and the verdict."""
        counts = self.counts
        verdict = "OK" if self.ok else f"NOT OK: {self.records_with_problems} raw file(s) with problems"
        if self.records == 0:  # not "OK": an audit that checked nothing proves nothing
            verdict = "NOTHING CHECKED: no upload_done raw file matched"
        return (
            f"audited {self.records} raw file(s): {counts[AuditFindingKind.OK]} object(s) ok, "
            f"{counts[AuditFindingKind.MISSING]} missing, {counts[AuditFindingKind.DIFFERENT]} different, "
            f"{counts[AuditFindingKind.EXTRA]} extra, {counts[AuditFindingKind.RECORD]} record problem(s), "
            f"{counts[AuditFindingKind.UNCHECKED]} not checked — {verdict}"
        )


# --------------------------------------------------------------------------- rendering


def json_line(finding: AuditFinding) -> str:
    """One finding as one line of JSON (fields :data:`FIELDS`)."""
    return json.dumps(finding.as_dict(), ensure_ascii=False)


def render_json_lines(findings: Iterable[AuditFinding], summary: AuditSummary | None = None) -> str:
    """One JSON object per finding, one per line; with ``summary``, a last line ``{"kind": "summary", ...}``."""
    lines = [json_line(finding) for finding in findings]
    if summary is not None:
        lines.append(json.dumps({"kind": "summary", **summary.as_dict()}))
    return "".join(f"{line}\n" for line in lines)


_TABLE_HEADER = ("STATUS", "RAW FILE", "KEY", "EXPECTED", "FOUND", "PROOF", "DETAIL")


def render_table(findings: Iterable[AuditFinding], summary: AuditSummary, *, include_ok: bool = False) -> str:
    """Aligned columns (status, raw file, key, expected and found ETag/size, detail), then the summary line.

    Ok rows are left out unless ``include_ok``: on a healthy store they are thousands of lines of nothing.
    """
    rows = [
        (
            _LABELS[finding.kind],
            finding.raw_file_id,
            finding.key or "-",
            _etag_and_size(finding.expected_etag, finding.expected_size),
            _etag_and_size(finding.found_etag, finding.found_size),
            finding.proof or "-",
            finding.detail,
        )
        for finding in findings
        if include_ok or not finding.ok
    ]
    if not rows:
        return f"{summary.describe()}\n"
    widths = [
        max(len(row[column]) for row in [_TABLE_HEADER, *rows]) for column in range(len(_TABLE_HEADER) - 1)
    ]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in [_TABLE_HEADER, *rows]
    ]
    return "\n".join([*lines, "", summary.describe()]) + "\n"


def _etag_and_size(etag: str | None, size: int | None) -> str:
    if etag is None and size is None:
        return "-"
    return f"{etag or '?'} ({'?' if size is None else f'{size:,}'} B)"
