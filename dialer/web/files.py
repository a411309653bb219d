"""Files through the console: uploading a CSV/XLSX list into a campaign (the CLI's loader: counts, and the rejected
rows with their line numbers to download) and downloading the campaign's report as XLSX or as a ZIP of CSVs.

Invariants: an upload larger than ``upload_limit`` is refused (413) while it streams in, before the loader sees it;
uploaded files and rejects live in the console's own working directory under random names (a name the browser sent
is never a path here); a rejects file is served only to a supervisor, by a random id the upload page gave.
"""

from __future__ import annotations

import io
import re
import secrets
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from dialer.ingest import campaigns as svc
from dialer.ingest.loader import LoadResult, load_file
from dialer.ingest.reading import LoaderError
from dialer.reporting.csv_export import export_csv
from dialer.reporting.reports import CampaignNotFound, build_report
from dialer.reporting.xlsx_export import export_xlsx
from dialer.web.security import CSRF_FIELD

if TYPE_CHECKING:
    from dialer.web.app import Console

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class _TooLarge(Exception):
    pass


def safe_name(name: str, default: str = "file") -> str:
    return _SAFE.sub("_", name).strip("._")[:80] or default


class Files:
    def __init__(self, console: Console, *, upload_limit: int, work_dir: Path | None) -> None:
        self.c = console
        self.upload_limit = upload_limit
        self._own_dir = work_dir is None
        self.dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="dialer-console-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rejects: dict[str, tuple[Path, str]] = {}

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/campaigns/{name}/upload", self.upload, methods=["POST"]),
            Route("/rejects/{key}", self.rejects, methods=["GET"]),
            Route("/campaigns/{name}/report.xlsx", self.report_xlsx, methods=["GET"]),
            Route("/campaigns/{name}/report.zip", self.report_csv, methods=["GET"]),
        ]

    async def upload(self, request: Request) -> Response:
        who = await self.c.board._user(request)
        name = request.path_params["name"]
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.upload_limit:
            raise HTTPException(413, f"the file is larger than the limit of {self.upload_limit // 1024 // 1024} MiB")
        try:
            form = await _limited(request, self.upload_limit).form(max_files=1, max_fields=10)
        except _TooLarge:
            raise HTTPException(413, f"the file is larger than the limit of {self.upload_limit // 1024 // 1024} MiB")\
                from None  # fmt: skip
        self.c.check_header_csrf(request, who, str(form.get(CSRF_FIELD) or ""))
        upload = form.get("file")
        if upload is None or isinstance(upload, str) or not upload.filename:
            raise HTTPException(422, "choose a CSV or XLSX file to upload")
        folder = self.dir / secrets.token_hex(8)
        folder.mkdir()
        path = folder / safe_name(upload.filename, "list.csv")
        with path.open("wb") as out:
            await upload.seek(0)
            while chunk := await upload.read(1 << 20):
                out.write(chunk)
        await form.close()
        key = secrets.token_urlsafe(16)
        rejects_path = folder / "rejects.csv"

        def work() -> tuple[dict[str, Any], LoadResult | None, str]:
            from dialer.db import session_scope

            with session_scope(self.c.db, write=False) as s:
                campaign = svc.find_campaign(s, name)
                found = {"campaign": campaign, "counts": svc.contact_counts(s, campaign.id or 0) if campaign else {}}
            if campaign is None:
                return found, None, f"no campaign named {name!r}"
            try:
                result = load_file(self.c.db, path, name, rejects_path=rejects_path)
            except (LoaderError, svc.CampaignError, ValueError) as exc:
                return found, None, str(exc)
            with session_scope(self.c.db, write=False) as s:
                found["counts"] = svc.contact_counts(s, campaign.id or 0)
            return found, result, ""

        found, result, error = await self.c.run(work)
        if found["campaign"] is None:
            raise HTTPException(404, error)
        if result is not None and result.rejects_path:
            self._rejects[key] = (Path(result.rejects_path), f"{safe_name(Path(upload.filename).stem)}.rejects.csv")
        path.unlink(missing_ok=True)
        self.c.board.wake()
        from dialer.web.board import SETTINGS

        return self.c.page("campaign.html", who, settings=SETTINGS, note="", error=error, result=result,
                           rejects_key=key if key in self._rejects else None,
                           filename=upload.filename, **found)  # fmt: skip

    async def rejects(self, request: Request) -> Response:
        await self.c.board._user(request)
        found = self._rejects.get(request.path_params["key"])
        if found is None or not found[0].is_file():
            raise HTTPException(404, "no such rejects file (they are kept until the console restarts)")
        return FileResponse(found[0], media_type="text/csv", filename=found[1])

    async def report_xlsx(self, request: Request) -> Response:
        await self.c.board._user(request)
        name = request.path_params["name"]
        folder = Path(tempfile.mkdtemp(dir=self.dir))
        path = folder / f"{safe_name(name, 'campaign')}.xlsx"

        def work() -> None:
            export_xlsx(self.c.db, build_report(self.c.db, name), path)

        await self._report(work, name)
        return FileResponse(path, filename=path.name, background=BackgroundTask(shutil.rmtree, folder, True),
                            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")

    async def report_csv(self, request: Request) -> Response:
        await self.c.board._user(request)
        name = request.path_params["name"]

        def work() -> bytes:
            with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
                paths = export_csv(self.c.db, build_report(self.c.db, name), Path(tmp))
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
                    for p in paths:
                        z.write(p, p.name)
                return buffer.getvalue()

        data = await self._report(work, name)
        filename = f"{safe_name(name, 'campaign')}-report.zip"
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})

    async def _report(self, work: Any, name: str) -> Any:
        try:
            return await self.c.run(work)
        except CampaignNotFound:
            raise HTTPException(404, f"no campaign named {name!r}") from None

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _limited(request: Request, limit: int) -> Request:
    """The request with its body cut off at ``limit`` bytes (``_TooLarge`` past it), however it was sent."""
    seen = 0
    receive = request.receive

    async def counted() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
        return message

    return Request(request.scope, counted)
