"""``POST /api/v1/users/import`` and ``/api/v1/jobs``: a CSV file over
HTTP, run by a real worker loop, on both databases; the limits of the
file, each with its answer; the per-row report as a client downloads it."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store.models import AuditEntry, OutboxEntry, User
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync.csv_import import ImportJobs
from scim_server.app import create_app
from tests.api.conftest import assert_problem

HEADER = "userName,E-Mail,givenName,familyName,idpUsername,customData.team"


def _rows(n: int, start: int = 0) -> list[str]:
    return [
        f"user{i}@corp.example,user{i}@corp.example,Given{i},Family{i},u{i},team{i % 3}"
        for i in range(start, start + n)
    ]


def _file(lines: list[str], header: str = HEADER, encoding: str = "utf-8") -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode(encoding)


async def _post(
    api: httpx.AsyncClient, data: bytes, name: str = "users.csv", **fields: Any
) -> httpx.Response:
    form = {k: (json.dumps(v) if k == "mapping" else str(v)) for k, v in fields.items()}
    return await api.post("/users/import", files={"file": (name, data, "text/csv")}, data=form)


async def _imported(
    api: httpx.AsyncClient, store: Store, data: bytes, **fields: Any
) -> dict[str, Any]:
    """The job of ``data`` once a worker ran it."""
    response = await _post(api, data, **fields)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "QUEUED"
    drained = await ImportJobs(store, name="test-worker").drain()
    assert job["id"] in drained.jobs
    found = await api.get(f"/jobs/{job['id']}")
    assert found.status_code == 200
    body: dict[str, Any] = found.json()
    return body


async def _report(api: httpx.AsyncClient, job_id: str) -> list[dict[str, str]]:
    response = await api.get(f"/jobs/{job_id}/report.csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(response.text)))


async def _count(engine: AsyncEngine, model: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(model))).scalar())


MAPPING = {"E-Mail": "email"}


async def test_rows_for_a_user_group_not_configured_fail_naming_it(
    api: httpx.AsyncClient, store: Store
) -> None:
    """The import puts its users in a group only as every user write does: a
    configured one (its crudSchema checked); each new row fails otherwise."""
    job = await _imported(api, store, _file(_rows(2)), mapping=MAPPING, userGroup="nowhere")
    assert job["status"] == "SUCCEEDED"
    assert {k: job["summary"][k] for k in ("rows", "created", "failed")} == {
        "rows": 2,
        "created": 0,
        "failed": 2,
    }
    assert [f["error"] for f in job["failures"]] == [
        "userGroup 'nowhere' is not a configured user group"
    ] * 2


async def test_an_import_creates_then_leaves_unchanged_and_reports_every_row(
    api: httpx.AsyncClient, store: Store, engine: AsyncEngine
) -> None:
    """Good rows are created (with their audit and outbox rows) whatever the
    bad ones do; the same file again changes nothing, writes no row, and
    says so row by row."""
    lines = [*_rows(3), "broken@corp.example,,x,y,z,t,extra", "=cmd|' /C calc'!A0,,a,b,c,d"]
    data = _file(lines)
    made = await api.post("/user-groups", json={"userGroup": "staff", "crudSchema": {}})
    assert made.status_code == 201, made.text
    first = await _imported(api, store, data, mapping=MAPPING, userGroup="staff")
    assert first["kind"] == "IMPORT"
    assert first["status"] == "SUCCEEDED"
    summary = first["summary"]
    assert {
        k: summary[k] for k in ("rows", "done", "created", "updated", "unchanged", "failed")
    } == {
        "rows": 5,
        "done": 5,
        "created": 4,
        "updated": 0,
        "unchanged": 0,
        "failed": 1,
    }
    assert summary["progress"] == 1.0
    assert first["params"]["mapping"] == MAPPING
    assert first["params"]["userGroup"] == "staff"
    assert first["failures"] == [
        {
            "row": 4,
            "line": 5,
            "key": None,
            "error": "the row has 7 fields; the header has 6",
        }
    ]
    audit, outbox = await _count(engine, AuditEntry), await _count(engine, OutboxEntry)
    assert audit == 1 + 4  # the user group's creation, then one per user created
    assert outbox == 4

    user = await api.get(f"/jobs/{first['id']}")
    assert user.json()["finishedAt"] is not None

    report = await _report(api, first["id"])
    assert [(r["row"], r["line"], r["outcome"]) for r in report] == [
        ("1", "2", "created"),
        ("2", "3", "created"),
        ("3", "4", "created"),
        ("4", "5", "failed"),
        ("5", "6", "created"),
    ]
    assert report[3]["message"] == "the row has 7 fields; the header has 6"
    # A cell a spreadsheet would run (here the userName, as written) starts with a quote.
    assert report[4]["key"] == "'=cmd|' /C calc'!A0"

    second = await _imported(api, store, data, mapping=MAPPING, userGroup="staff")
    assert second["summary"]["unchanged"] == 4
    assert second["summary"]["created"] == second["summary"]["updated"] == 0
    assert await _count(engine, AuditEntry) == audit
    assert await _count(engine, OutboxEntry) == outbox
    rerun = await _report(api, second["id"])
    assert [r["outcome"] for r in rerun] == ["unchanged"] * 3 + ["failed", "unchanged"]
    assert [r["userId"] for r in rerun] == [r["userId"] for r in report]

    scim = await api.get("/jobs", params={"kind": "IMPORT"})
    assert [j["id"] for j in scim.json()["items"]] == [second["id"], first["id"]]
    assert "failures" not in scim.json()["items"][0]


async def test_an_update_changes_only_the_attributes_the_row_gives(
    api: httpx.AsyncClient, store: Store, engine: AsyncEngine
) -> None:
    """An empty cell keeps the stored value; a changed one is written with
    its audit and outbox rows; an externalId upsert renames a user."""
    await _imported(api, store, _file(_rows(2)), mapping=MAPPING)
    changed = _file(
        ["user0@corp.example,,Ada,,,team9", "user1@corp.example,,,,,"],
    )
    job = await _imported(api, store, changed, mapping=MAPPING)
    assert job["summary"]["updated"] == 1
    assert job["summary"]["unchanged"] == 1
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(User.given_name, User.family_name, User.custom_data, User.idp_source).where(
                    User.user_name == "user0@corp.example"
                )
            )
        ).one()
    assert tuple(row) == ("Ada", "Family0", {"team": "team9"}, "IMPORT")

    by_external = _file(
        ["ext-0,renamed0@corp.example", "ext-9,new9@corp.example"], header="externalId,userName"
    )
    await _imported(api, store, _file(["user0@corp.example,ext-0"], header="userName,externalId"))
    job = await _imported(api, store, by_external, upsertBy="externalId")
    assert job["summary"]["updated"] == 1
    assert job["summary"]["created"] == 1
    report = await _report(api, job["id"])
    assert [(r["outcome"], r["key"]) for r in report] == [
        ("updated", "ext-0"),
        ("created", "ext-9"),
    ]
    async with engine.connect() as connection:
        renamed = (
            await connection.execute(select(User.user_name).where(User.external_id == "ext-0"))
        ).scalar_one()
    assert renamed == "renamed0@corp.example"


async def test_a_dry_run_reports_and_writes_nothing(
    api: httpx.AsyncClient, store: Store, engine: AsyncEngine
) -> None:
    job = await _imported(api, store, _file(_rows(3)), mapping=MAPPING, dryRun="true")
    assert job["summary"]["created"] == 3
    assert job["params"]["dryRun"] is True
    assert await _count(engine, User) == 0
    assert await _count(engine, AuditEntry) == 0
    report = await _report(api, job["id"])
    assert [r["outcome"] for r in report] == ["created"] * 3
    assert {r["userId"] for r in report} == {""}


async def test_rows_with_hostile_cells_fail_alone(
    api: httpx.AsyncClient, store: Store, settings: Settings
) -> None:
    """NUL, bytes not valid in the encoding, a cell over the limit, a
    20-digit number, year-1 dates, a 10,000-field row, a stray quote: each
    fails its own row with a clear message; the good row is created."""
    huge = "x" * (settings.import_max_cell_chars + 1)
    header = "userName,employeeNumber,expirationDate,customData"
    lines = [
        b"nul@corp.example,1\x002,,",
        b"bad-bytes@corp.example,\xff\xfe,,",
        f"long@corp.example,{huge},,".encode(),
        b'big@corp.example,12345678901234567890,,"{""n"": 12345678901234567890}"',
        b"digits@corp.example,12345678901234567890,,",
        b"year-one@corp.example,,0001-01-01,",
        b"year-one-east@corp.example,,0001-01-01T00:00:00+05:00,",
        b"not-a-date@corp.example,,12345678901234567890,",
        ",".join(["wide@corp.example"] + ["x"] * 9_999).encode(),
        b'"quoted"tail@corp.example,,,',
        b"ok@corp.example,7,,",
    ]
    data = header.encode() + b"\n" + b"\n".join(lines) + b"\n"
    job = await _imported(api, store, data)
    report = {r["row"]: (r["outcome"], r["message"]) for r in await _report(api, job["id"])}
    assert report == {
        "1": ("failed", "column 'employeeNumber' holds a NUL character"),
        "2": ("failed", "column 'employeeNumber' holds bytes that are not valid utf-8"),
        "3": (
            "failed",
            f"column 'employeeNumber' is {len(huge):,} characters long; "
            f"at most {settings.import_max_cell_chars:,} allowed",
        ),
        "4": (
            "failed",
            "customData holds the integer 12345678901234567890, beyond ±(2^53-1): JSON clients "
            "cannot read it exactly (write it as a string)",
        ),
        "5": ("created", ""),
        "6": ("created", ""),
        "7": ("failed", "expirationDate is out of range: '0001-01-01T00:00:00+05:00'"),
        "8": (
            "failed",
            "expirationDate must be an ISO 8601 date or time (2027-01-31 or "
            "2027-01-31T18:00:00+01:00), not '12345678901234567890'",
        ),
        "9": ("failed", "the row has 10,000 fields; the header has 4"),
        "10": ("failed", "not CSV of this format: ',' expected after '\"'"),
        "11": ("created", ""),
    }
    users = await api.get("/jobs", params={"status": "SUCCEEDED"})
    assert users.json()["items"][0]["summary"]["created"] == 3


async def test_files_that_cannot_be_imported_are_refused_before_any_job(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Each refusal is a problem naming what is wrong; no job is created."""
    cases: list[tuple[bytes, dict[str, Any], int, str]] = [
        (
            _file(_rows(1)),
            {},
            400,
            'column \'E-Mail\' is no attribute: map it to one ("mapping": {"E-Mail": "email"}) '
            'or ignore it ("mapping": {"E-Mail": null})',
        ),
        (
            _file(_rows(1)),
            {"mapping": {"E-Mail": "mail"}},
            400,
            "the mapping maps 'E-Mail' to 'mail', which is no attribute (attributes: "
            "userName, externalId, displayName, givenName, familyName, middleName, "
            "formattedName, nickName, honorificPrefix, honorificSuffix, title, locale, "
            "preferredLanguage, timezone, profileUrl, employeeNumber, costCenter, organization, "
            "division, department, manager, idpReferenceId, idpUsername, idpWorkforceId, "
            "idpCloudUsername, idpSource, userType, userGroup, active, blocked, expirationDate, "
            "email, emailVerified, phoneNumber, phoneNumberVerified, customData, "
            "customData.<key>)",
        ),
        (
            _file(_rows(1)),
            {"mapping": {"Mail": "email"}},
            400,
            "the mapping names column 'Mail', which the header lacks",
        ),
        (
            b"userName,email,EMAIL\nann,a,b\n",
            {},
            400,
            "the header names 'EMAIL' twice (columns 2 and 3)",
        ),
        (
            b"userName,\xffmail\nann,a\n",
            {},
            400,
            "column 2 of the header holds bytes that are not valid utf-8",
        ),
        (
            ",".join(["userName"] + [f"customData.c{i}" for i in range(9_999)]).encode() + b"\n",
            {},
            400,
            "the header (line 1) has 10,000 columns; at most 256 are allowed",
        ),
        (
            b'userName,email\nann,"a@corp.example\nbob,b@corp.example\n',
            {},
            400,
            "the record starting at line 2 has a quoted field that is never closed",
        ),
        (b"userName,email\n", {}, 400, "the file has a header but no rows"),
        (b"", {}, 400, "the file is empty: it has no header"),
        (
            _file(_rows(1)),
            {"mapping": MAPPING, "upsertBy": "externalId"},
            400,
            "upsertBy is externalId: a column must hold externalId",
        ),
        (_file(_rows(1)), {"encoding": "rot13"}, 400, None),
        (_file(_rows(1)), {"delimiter": ";;"}, 400, None),
        (_file(_rows(1)), {"mapping": "[1]"}, 400, None),
        (_file(_rows(1)), {"dryRun": "maybe"}, 400, "dryRun must be true or false"),
        (_file(_rows(1)), {"colour": "red"}, 400, None),
    ]
    for data, fields, status, detail in cases:
        if fields.get("mapping") == "[1]":
            response = await api.post(
                "/users/import", files={"file": ("u.csv", data)}, data={"mapping": "[1]"}
            )
        else:
            response = await _post(api, data, **fields)
        assert_problem(response, status, "invalid-request", detail)
    assert (await api.get("/jobs")).json()["items"] == []


async def test_the_limits_of_size_and_rows_answer_413(
    settings: Settings, engine: AsyncEngine, api_tokens: dict[str, str]
) -> None:
    """A file over ``IDSTORE_IMPORT_MAX_BYTES`` or ``IDSTORE_IMPORT_MAX_ROWS``,
    and a body over the file's limit and a mebibyte of framing."""
    limited = settings.model_copy(update={"import_max_bytes": 2048, "import_max_rows": 3})
    application = create_app(limited)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver/api/v1",
            headers={"Authorization": f"Bearer {api_tokens['admin']}"},
        ) as api,
    ):
        too_big = _file(_rows(40), header="userName")
        assert len(too_big) > 2048
        response = await _post(api, too_big)
        assert_problem(response, 413, "too-large", "the file is larger than 2,048 bytes")
        response = await _post(api, _file([f"u{i}" for i in range(4)], header="userName"))
        assert_problem(response, 413, "too-large", "the file has more than 3 rows")
        body = b"x" * (2048 + 1_048_576 + 1)
        response = await api.post("/users/import", files={"file": ("big.csv", body)})
        assert_problem(response, 413, "too-large", "the request body exceeds 1,050,624 bytes")
    assert await _count(engine, User) == 0


async def test_the_body_must_be_multipart_with_one_file(api: httpx.AsyncClient) -> None:
    response = await api.post("/users/import", content=b"userName\nann\n")
    assert_problem(
        response,
        415,
        "unsupported-media-type",
        "send the file as multipart/form-data (part 'file')",
    )
    response = await api.post("/users/import", data={"file": "userName\nann\n"})
    assert_problem(response, 415, "unsupported-media-type")
    response = await api.post(
        "/users/import", files={"delimiter": (None, ";")}, data={"upsertBy": "userName"}
    )
    assert_problem(response, 400, "invalid-request", "the part 'file' (the CSV file) is missing")


async def test_jobs_are_paged_and_unknown_ones_are_404(
    api: httpx.AsyncClient, store: Store, as_scope: Any
) -> None:
    ids = []
    for n in range(3):
        response = await _post(api, _file([f"p{n}@corp.example"], header="userName"))
        ids.append(response.json()["id"])
    first = await api.get("/jobs", params={"count": 2})
    assert [j["id"] for j in first.json()["items"]] == ids[::-1][:2]
    cursor = first.json()["nextCursor"]
    second = await api.get("/jobs", params={"count": 2, "cursor": cursor})
    assert [j["id"] for j in second.json()["items"]] == ids[:1]
    assert second.json()["nextCursor"] is None
    assert_problem(await api.get("/jobs/01ZZZZZZZZZZZZZZZZZZZZZZZZ"), 404, "not-found")
    assert_problem(await api.get("/jobs/01ZZZZZZZZZZZZZZZZZZZZZZZZ/report.csv"), 404, "not-found")
    assert_problem(await api.get("/jobs", params={"cursor": "bm9wZQ"}), 400, "invalid-cursor")
    reader = as_scope("scim:write")
    assert_problem(await reader.get(f"/jobs/{ids[0]}"), 403, "insufficient-scope")
    assert_problem(
        await reader.post("/users/import", files={"file": ("u.csv", b"userName\nx\n")}),
        403,
        "insufficient-scope",
    )


@pytest.mark.parametrize(
    ("encoding", "delimiter"), [("utf-16", ";"), ("latin-1", "\t"), ("utf-8-sig", "|")]
)
async def test_the_file_is_read_in_its_encoding_and_format(
    api: httpx.AsyncClient, store: Store, engine: AsyncEngine, encoding: str, delimiter: str
) -> None:
    header = delimiter.join(["userName", "Nom", "Note"])
    line = delimiter.join(["zoë@corp.example", "Zoë", '"a ' + delimiter + ' b"'])
    data = _file([line], header=header, encoding=encoding)
    job = await _imported(
        api,
        store,
        data,
        encoding=encoding,
        delimiter=delimiter,
        mapping={"Nom": "givenName", "Note": "customData.note"},
    )
    assert job["summary"]["created"] == 1, job
    async with engine.connect() as connection:
        row = (await connection.execute(select(User.given_name, User.custom_data))).one()
    assert tuple(row) == ("Zoë", {"note": f"a {delimiter} b"})
