"""Flower's configuration file: where Flower listens, and never beyond this host without authentication.

``celery -A tasks flower`` executes ./flowerconfig.py (Flower's ``--conf`` default) once it has read the FLOWER_*
variables and its command line, takes each name defined here that is a Flower option as that option (only
``address``: every other name starts with an underscore), then reads its command line again. Every Flower of this
repository starts in its root (make run's Procfile, the compose file's flower service, an operator by hand), so
these rules hold for all of them:

- Flower listens on FLOWER_ADDRESS or ``--address``, by default 127.0.0.1 (``Settings.flower_address``), not on
  every interface as Flower would;
- on an address that is not loopback it refuses to start, in one line naming the variables, unless
  FLOWER_BASIC_AUTH or Flower's OAuth (FLOWER_AUTH) is set: whoever reaches the port would otherwise read every
  task's arguments and results (and with FLOWER_UNAUTHENTICATED_API, revoke tasks and stop workers);
- Flower's warning "Inspect method <m> failed" is dropped. Flower logs it for each method when no worker answered
  an inspection within inspect_timeout (1 s): every start under make run and compose, where the worker boots next
  to Flower, and any refresh while no worker runs. Neither is news: the dashboard lists the workers (online or
  not) from their events, and ``celery -A tasks inspect ping`` asks them. The variant naming an error (the broker
  unreachable) is a different message and still shows.
"""

import ipaddress as _ipaddress
import logging as _logging
import socket as _socket

from tornado.options import options as _flower

from tasks.celery import settings as _settings


def _is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (a name is resolved as Flower's bind will)."""
    try:
        found = _socket.getaddrinfo(host, None, proto=_socket.IPPROTO_TCP)
    except _socket.gaierror:
        return False  # not resolvable here: refused like any address not known to be loopback
    return all(_ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in found)


address = _flower.address or _settings.flower_address
# An empty FLOWER_BASIC_AUTH reaches Flower as [""]: no password at all.
if not _is_loopback(address) and not (any(_flower.basic_auth) or _flower.auth):
    raise SystemExit(
        f"recsvc flower: refusing to listen on {address} (FLOWER_ADDRESS or --address) without authentication: "
        "set FLOWER_BASIC_AUTH=user:password (or Flower's OAuth: FLOWER_AUTH, FLOWER_AUTH_PROVIDER), "
        "or FLOWER_ADDRESS=127.0.0.1"
    )

_logging.getLogger("flower.inspector").addFilter(lambda record: record.msg != "Inspect method %s failed")
