"""How the client reaches a server: address, protocol, timeouts and TLS, and the tritonclient objects for it.

tritonclient's HTTP client runs on gevent and must be used by the thread that created it ("Cannot switch to
a different thread"), so nothing shares one: every thread, batch worker and stream makes its own client
from these settings (:meth:`Connection.client`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROTOCOLS = ("grpc", "http")


@dataclass(frozen=True)
class Connection:
    url: str = "localhost:8001"  # host:port (gRPC 8001, HTTP 8000), without a scheme
    protocol: str = "grpc"
    timeout_s: float = 300.0  # one request at most (gRPC deadline; HTTP connection and network timeouts)
    ssl: bool = False  # TLS (https for HTTP)
    root_certificates: str | None = None  # PEM file of the CAs that sign the server's certificate
    private_key: str | None = None  # PEM files of a client certificate (mutual TLS)
    certificate_chain: str | None = None
    insecure: bool = False  # HTTP only: do not check that the certificate names the host

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 'grpc' or 'http', got {self.protocol!r}")
        if "://" in self.url:
            raise ValueError(f"url is host:port without a scheme (use ssl=True for TLS), got {self.url!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be above 0, got {self.timeout_s}")
        files = {
            "root_certificates": self.root_certificates,
            "private_key": self.private_key,
            "certificate_chain": self.certificate_chain,
        }
        given = [name for name, path in files.items() if path is not None]
        if given and not self.ssl:
            raise ValueError(f"{', '.join(given)} need ssl=True")
        for name in given:
            if not Path(files[name]).is_file():
                raise ValueError(f"{name}: no such file {files[name]}")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("a client certificate needs both private_key and certificate_chain")
        if self.insecure and (self.protocol != "http" or not self.ssl):
            raise ValueError("insecure applies to HTTP with ssl=True only")

    def client(self):
        """A new tritonclient client for these settings (gRPC or HTTP); one per thread."""
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(
                self.url,
                ssl=self.ssl,
                root_certificates=self.root_certificates,
                private_key=self.private_key,
                certificate_chain=self.certificate_chain,
            )
        import tritonclient.http as httpclient

        ssl_options = {}
        if self.root_certificates:
            ssl_options["ca_certs"] = self.root_certificates
        if self.private_key:
            ssl_options.update(certfile=self.certificate_chain, keyfile=self.private_key)
        return httpclient.InferenceServerClient(
            self.url,
            connection_timeout=self.timeout_s,
            network_timeout=self.timeout_s,
            ssl=self.ssl,
            ssl_options=ssl_options or None,
            insecure=self.insecure,
        )

    @property
    def module(self):
        """tritonclient.grpc or tritonclient.http (for InferInput)."""
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    def infer_kwargs(self) -> dict:
        """Per-request arguments: gRPC takes its deadline per call, HTTP at construction."""
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
