from typing import Any

import requests
from requests.adapters import HTTPAdapter

class IPFilterAdapter(HTTPAdapter):
    _is_https_proto: bool
    _allow_loopback: bool
    _tls_sni_support: bool
    def __init__(self, is_https_proto: bool, allow_loopback: bool = False, tls_sni_support: bool = True) -> None: ...
    # The return type is HTTPAdapter's: urllib3 pool key attributes.
    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]: ...
