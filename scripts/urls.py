"""Print where the running system answers (used by ``make run`` before it starts the processes)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.config import load_settings  # noqa: E402

settings = load_settings()
host = "localhost" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
api = f"http://{host}:{settings.api_port}"
flower_port = os.environ.get("FLOWER_PORT", "5555")  # Flower reads FLOWER_* variables itself
print(
    f"""
recsvc is starting (Ctrl-C stops every process):
  API             {api}/
  a feed          {api}/recommendations/<user_id>?limit=20
  Swagger UI      {api}/docs        ReDoc {api}/redoc
  health          {api}/health      metrics {api}/metrics
  Flower          http://localhost:{flower_port}/
  admin token     ADMIN_TOKEN in .env
""",
    flush=True,
)
