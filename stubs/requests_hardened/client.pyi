import requests
from requests_hardened.config import Config

class HTTPSession(requests.Session):
    def __init__(self, config: Config, **kwargs: object) -> None: ...
