from dataclasses import dataclass

@dataclass
class Config:
    ip_filter_enable: bool
    ip_filter_allow_loopback_ips: bool
    never_redirect: bool
    default_timeout: tuple[float, float] | None
    user_agent_override: str | None = None
    ip_filter_tls_sni_support: bool = True
