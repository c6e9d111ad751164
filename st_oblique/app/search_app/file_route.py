"""The app's only route to the user's files: ``GET /images/<relative path>``, read-only, serving exactly the image
files of the corpus and nothing else under (or outside) their folder.

A request is served only when its path is one of the corpus's image paths (listed when the app started) *and* the
file it names, with every symbolic link resolved, lies inside the image folder; anything else is a 404 that says
nothing about what exists. ``..`` segments, absolute paths, encoded slashes and links out of the folder therefore
never reach a file outside it. Only GET is routed (other methods get 405).

Example::

    from fastapi import FastAPI
    from st_oblique.app.search_app.file_route import image_router, image_url

    app = FastAPI()
    app.include_router(image_router(corpus))
    image_url("dogs/beach 1.jpg")          # "images/dogs/beach%201.jpg" (relative to the page)
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from st_oblique.app.search_app.corpus import SearchCorpus

__all__ = ["IMAGE_ROUTE", "image_router", "image_url", "served_file"]

IMAGE_ROUTE = "/images"
HEADERS = {
    "Cache-Control": "private, max-age=600",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}


def served_file(root: Path, allowed: frozenset[str], requested: str) -> Path | None:
    """The file ``requested`` (a relative POSIX path, URL-decoded) names, or None when it must not be served.

    Args:
        root: the image folder (resolved).
        allowed: the relative paths of the corpus's images.
        requested: the path after ``/images/``.
    """
    if requested not in allowed:
        return None
    candidate = (root / requested).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def image_url(relative: str) -> str:
    """The URL of a corpus image, relative to the app's page (``images/<quoted path>``)."""
    return f"{IMAGE_ROUTE.lstrip('/')}/{quote(relative)}"


def image_router(corpus: SearchCorpus) -> APIRouter:
    """``GET /images/{path}`` for the images of ``corpus`` (an empty router without images)."""
    router = APIRouter()
    if corpus.images_root is None:
        return router
    root = corpus.images_root.resolve()
    allowed = frozenset(corpus.images)

    @router.get(IMAGE_ROUTE + "/{path:path}", include_in_schema=False)
    def image_file(path: str) -> FileResponse:
        file = served_file(root, allowed, path)
        if file is None:
            raise HTTPException(status_code=404, detail="Not an image of this app.")
        return FileResponse(file, headers=HEADERS)

    return router
