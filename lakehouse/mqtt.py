"""One way to build an MQTT client, for every Shelflife component that talks to a broker.

The agent, ingest, the order dispatcher and ``deadletters redrive`` used to build their
paho clients by hand, and each got a different subset of TLS, login and reconnect
settings. :class:`BrokerAddress` says where a broker is and how to log in to it;
:func:`make_client` turns it into a configured client. This module imports only paho and
the standard library, so the store agent (no Spark, no pandas) can use it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

RECONNECT_MIN_S = 1
"""First wait before paho reconnects a dropped link."""
RECONNECT_MAX_S = 10
"""Longest wait between reconnect attempts: a broker back from a restart is found soon,
and hundreds of stores do not hammer one that is still down."""

ClientT = TypeVar("ClientT", bound=mqtt.Client)


@dataclass(frozen=True)
class BrokerAddress:
    """Where one broker listens and how a client logs in to it; checked at creation."""

    host: str = "127.0.0.1"
    """Broker host name or address (must match the certificate's name under TLS)."""
    port: int = 18831
    """Broker port."""
    username: str | None = None
    """Login name (a store's location id, ``ingest@<region>``, ...); None = anonymous."""
    password: str | None = field(default=None, repr=False)
    """Password of ``username``; never shown in reprs or logs."""
    tls_ca: str | None = None
    """CA certificate (PEM) the broker's certificate must chain to; set = TLS."""
    tls_cert: str | None = None
    """Client certificate (PEM), for brokers that ask for one; needs ``tls_key``."""
    tls_key: str | None = field(default=None, repr=False)
    """Private key of ``tls_cert``."""
    client_id: str = ""
    """MQTT client id ("" = paho picks one; secure brokers use the username anyway)."""

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host: expected a host name or address, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not (
                1 <= self.port <= 65535):
            raise ValueError(f"port: expected an integer 1-65535, got {self.port!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (got only "
                             f"{'tls_cert' if self.tls_cert else 'tls_key'})")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValueError(f"{name}: no such file {value}")

    @property
    def tls(self) -> bool:
        """True when the client connects over TLS."""
        return self.tls_ca is not None or self.tls_cert is not None

    def with_login(self, username: str | None, password: str | None) -> BrokerAddress:
        """The same broker, logged in as someone else."""
        return replace(self, username=username, password=password)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (" (tls)" if self.tls else "")


def make_client(address: BrokerAddress, *, client_id: str | None = None,
                clean_session: bool = True, client_class: type[ClientT] = mqtt.Client,
                **client_kwargs: Any) -> ClientT:
    """A paho client (MQTT 3.1.1, callback API 2) set up for ``address``.

    TLS with the address's CA (and client certificate) when given, its login, and
    reconnect delays of 1-10 s. ``client_class`` lets ingest use its paho subclass that
    withholds PUBCOMP; ``client_kwargs`` go to its constructor (e.g. ``manual_ack``).
    The caller connects (``connect``/``connect_async``) and sets its callbacks.
    """
    client = client_class(CallbackAPIVersion.VERSION2,
                          client_id=client_id if client_id is not None else address.client_id,
                          clean_session=clean_session, protocol=mqtt.MQTTv311,
                          **client_kwargs)
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(ca_certs=address.tls_ca, certfile=address.tls_cert,
                       keyfile=address.tls_key, cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
    return client
