"""Print where the running system answers and listens (``make run`` prints it before it starts the processes).

Usage: ``python scripts/urls.py [ENV_FILE]``. honcho lays make run's env file over the environment of every
process (its values win), so the same is done here and the addresses printed are the ones gunicorn and Flower
bind (API_HOST and API_PORT; FLOWER_ADDRESS and FLOWER_PORT, as flowerconfig.py applies them).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dotenv import dotenv_values  # noqa: E402

from common.config import load_settings  # noqa: E402

EVERY_INTERFACE = ("0.0.0.0", "::")


def url(host: str, port: int) -> str:
    """The URL to open for a server bound to ``host``: localhost for a wildcard bind, IPv6 in brackets."""
    host = "localhost" if host in EVERY_INTERFACE else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def where(host: str, port: int) -> str:
    reach = " (every interface: reachable from the network)" if host in EVERY_INTERFACE else ""
    return f"listens on {host} port {port}{reach}"


if len(sys.argv) > 1 and os.path.isfile(sys.argv[1]):
    os.environ.update({name: value for name, value in dotenv_values(sys.argv[1]).items() if value is not None})
settings = load_settings()
api = url(settings.api_host, settings.api_port)
flower = url(settings.flower_address, settings.flower_port)
print(
    f"""
recsvc is starting (Ctrl-C stops every process):
  API             {api}/    {where(settings.api_host, settings.api_port)}
  a feed          {api}/recommendations/<user_id>?limit=20
  Swagger UI      {api}/docs        ReDoc {api}/redoc
  health          {api}/health      metrics {api}/metrics
  Flower          {flower}/    {where(settings.flower_address, settings.flower_port)}
  admin token     ADMIN_TOKEN in {sys.argv[1] if len(sys.argv) > 1 else ".env"}
""",
    flush=True,
)
