"""``HTTPException(status_code, detail=None, headers=None)``: FastAPI's constructor and attributes (the API's
error middleware answers ``status_code`` with ``detail``)."""


class HTTPException(Exception):
    def __init__(self, status_code: int, detail=None, headers=None):
        super().__init__(detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers
