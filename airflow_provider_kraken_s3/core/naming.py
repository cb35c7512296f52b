"""Bucket names for project backups: ``{bucket_prefix}-{project_id}``, normalised and validated.

Each project gets its own bucket. A lab switching from alphakraken's own uploader must find its objects
where they are, so whenever alphakraken's name for a bucket is a valid S3 name, ours is exactly that name
(``_FALLBACK`` → ``alphakraken--fallback``). Where theirs is invalid (``Müller_2024``), project ids are
normalised into S3's naming alphabet. The normalisation never truncates: cutting a long name could map two
projects onto one bucket, and a backup landing in another project's bucket is worse than a clear error.

Pure module (stdlib only) so it can run at DAG-parse time and in tests without AWS.
"""

from __future__ import annotations

import re

from airflow_provider_kraken_s3.core.errors import InvalidInputError

__all__ = [
    "MAX_BUCKET_NAME_LENGTH",
    "MIN_BUCKET_NAME_LENGTH",
    "RESERVED_PREFIXES",
    "RESERVED_SUFFIXES",
    "alphakraken_bucket_name",
    "bucket_name",
    "bucket_name_problems",
    "check_bucket_prefix",
    "normalise_name_part",
]

MIN_BUCKET_NAME_LENGTH = 3
MAX_BUCKET_NAME_LENGTH = 63

# Published S3 rules for general purpose buckets (AWS "General purpose bucket naming rules").
RESERVED_PREFIXES: tuple[str, ...] = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_SUFFIXES: tuple[str, ...] = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")

# Everything outside [a-z0-9] (after ASCII lower-casing) becomes one hyphen per run; '-' itself is in the
# class so that existing hyphen runs collapse too.
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")
_ALLOWED_CHARS = re.compile(r"[a-z0-9.-]*")
_IP_ADDRESS_LIKE = re.compile(r"[0-9]+(\.[0-9]+){3}")
_ASCII_UPPER_TO_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalise_name_part(text: str) -> str:
    """Map ``text`` into the hyphen-only bucket alphabet: ``"PRJ.001"`` -> ``"prj-001"``.

    Only ASCII letters are lower-cased: ``str.lower()`` would turn e.g. the Kelvin sign into ``k`` or
    ``İ`` into ``i`` plus a combining dot, silently making unrelated ids look alike. Dots are replaced
    too, because dotted bucket names break TLS certificate matching of virtual-hosted-style URLs.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"expected a string, got {type(text).__name__} {text!r}; pass text")
    return _NOT_NAME_CHARS.sub("-", text.translate(_ASCII_UPPER_TO_LOWER)).strip("-")


def check_bucket_prefix(bucket_prefix: str) -> str:
    """Return the normalised ``bucket_prefix`` or raise if no project could ever be appended to it.

    Usable on its own (e.g. when settings are resolved) to report a bad prefix before any project is known.
    """
    if not isinstance(bucket_prefix, str):
        raise InvalidInputError(
            f"bucket_prefix must be a string, got {type(bucket_prefix).__name__} {bucket_prefix!r}; "
            "set bucket_prefix to text such as 'alphakraken'"
        )
    prefix = normalise_name_part(bucket_prefix)
    if not prefix:
        raise InvalidInputError(
            f"bucket_prefix {bucket_prefix!r} contains no letters or digits; "
            "set bucket_prefix to text such as 'alphakraken'"
        )
    # The shortest possible bucket is "{prefix}-{one character}".
    longest = MAX_BUCKET_NAME_LENGTH - 2
    if len(prefix) > longest:
        raise InvalidInputError(
            f"bucket_prefix {bucket_prefix!r} normalises to {prefix!r} ({len(prefix)} characters), which "
            f"leaves no room for a project id within S3's {MAX_BUCKET_NAME_LENGTH}-character bucket name "
            f"limit; use a prefix of at most {longest} characters, ideally much shorter"
        )
    for reserved in RESERVED_PREFIXES:
        if f"{prefix}-".startswith(reserved):
            raise InvalidInputError(
                f"bucket_prefix {bucket_prefix!r} makes bucket names start with {reserved!r}, "
                "a reserved S3 prefix; choose a different bucket_prefix"
            )
    return prefix


def alphakraken_bucket_name(bucket_prefix: str, project_id: str) -> str:
    """alphakraken's own rule (``s3_uploader``): lower-case, ``_``, ``.`` and spaces become hyphens.

    It is not always a valid bucket name (``Müller`` keeps its ``ü``); :func:`bucket_name` checks it.
    """
    project = project_id.lower().replace("_", "-").replace(".", "-").replace(" ", "-")
    return f"{bucket_prefix}-{project}".lower()


def bucket_name(bucket_prefix: str, project_id: str) -> str:
    """Return the bucket for a project, always a valid S3 general purpose bucket name.

    alphakraken's name when it is valid (so both uploaders use the same buckets); otherwise
    ``{prefix}-{project}`` with both parts normalised by :func:`normalise_name_part`. Distinct ids can share
    a bucket (``PRJ-001`` and ``prj.001``; ``Müller_2024`` and ``Möller_2024``): a bucket the operator creates
    carries its ``project_id`` tag, and a bucket tagged for another project is refused. Anything that would
    need truncation or hits a reserved name is refused instead of being altered.
    """
    prefix = check_bucket_prefix(bucket_prefix)
    if isinstance(project_id, str) and isinstance(bucket_prefix, str):
        theirs = alphakraken_bucket_name(bucket_prefix, project_id)
        if not bucket_name_problems(theirs):
            return theirs
    if not isinstance(project_id, str):
        raise InvalidInputError(
            f"project_id must be a string, got {type(project_id).__name__} {project_id!r}; "
            "set the raw file's project id to text such as 'PRID001'"
        )
    project = normalise_name_part(project_id)
    if not project:
        raise InvalidInputError(
            f"project_id {project_id!r} contains no letters or digits, so it cannot name a bucket; "
            "give the raw file a project id with at least one ASCII letter or digit"
        )
    name = f"{prefix}-{project}"
    if len(name) > MAX_BUCKET_NAME_LENGTH:
        room = MAX_BUCKET_NAME_LENGTH - len(project) - 1
        advice = (
            f"use a bucket_prefix of at most {room} characters (now {len(prefix)})"
            if room > 0
            else f"shorten the project id to at most {MAX_BUCKET_NAME_LENGTH - len(prefix) - 1} characters"
        )
        raise InvalidInputError(
            f"bucket name {name!r} for project {project_id!r} is {len(name)} characters long, but S3 allows "
            f"at most {MAX_BUCKET_NAME_LENGTH} and names are never truncated (that could merge projects); "
            f"{advice}"
        )
    problems = bucket_name_problems(name)
    if problems:
        raise InvalidInputError(
            f"bucket name {name!r} for project {project_id!r} is not a valid S3 bucket name: "
            f"{'; '.join(problems)}; choose a different bucket_prefix or project id"
        )
    return name


def bucket_name_problems(name: str) -> list[str]:
    """List every way ``name`` breaks S3's published general purpose bucket naming rules ([] = valid).

    Independent of :func:`bucket_name` on purpose, so it can check that function (and names typed by
    people). It implements the published rules, which allow dots, although :func:`bucket_name` never makes
    dotted names.
    """
    if not isinstance(name, str):
        return [f"must be a string, not {type(name).__name__}"]
    problems: list[str] = []
    if not MIN_BUCKET_NAME_LENGTH <= len(name) <= MAX_BUCKET_NAME_LENGTH:
        problems.append(
            f"must be {MIN_BUCKET_NAME_LENGTH} to {MAX_BUCKET_NAME_LENGTH} characters long, is {len(name)}"
        )
    if not _ALLOWED_CHARS.fullmatch(name):
        bad = sorted({c for c in name if not _ALLOWED_CHARS.fullmatch(c)})
        problems.append(f"may contain only lower-case letters a-z, digits, '.' and '-', not {''.join(bad)!r}")
    if name and not (_is_letter_or_digit(name[0]) and _is_letter_or_digit(name[-1])):
        problems.append("must begin and end with a lower-case letter or digit")
    if ".." in name:
        problems.append("must not contain two adjacent periods")
    if _IP_ADDRESS_LIKE.fullmatch(name):
        problems.append("must not be formatted as an IP address")
    problems.extend(
        f"must not start with the reserved prefix {p!r}" for p in RESERVED_PREFIXES if name.startswith(p)
    )
    problems.extend(
        f"must not end with the reserved suffix {s!r}" for s in RESERVED_SUFFIXES if name.endswith(s)
    )
    return problems


def _is_letter_or_digit(char: str) -> bool:
    return "a" <= char <= "z" or "0" <= char <= "9"
