"""Stand-in for the part of FastAPI the WebUI's API error handling uses (FastAPI is not installed in CI):
``fastapi.exceptions.HTTPException`` (also exported here), with FastAPI's constructor and attributes."""
from .exceptions import HTTPException  # noqa: F401
