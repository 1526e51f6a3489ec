"""Where Flower listens (flowerconfig.py): this host by default, and never beyond it without authentication.

Flower is started as ``make run`` and the compose file start it, ``celery -A tasks flower`` in the repository root,
which reads ./flowerconfig.py. Without authentication anyone who reaches Flower's port reads every task's
arguments and results, so an address that is not loopback needs FLOWER_BASIC_AUTH (or Flower's OAuth).
"""

from __future__ import annotations

import pytest
import requests

from testing.polling import wait_until
from testing.processes import free_port, listening_addresses

REFUSAL = (
    "recsvc flower: refusing to listen on {address} (FLOWER_ADDRESS or --address) without authentication: "
    "set FLOWER_BASIC_AUTH=user:password (or Flower's OAuth: FLOWER_AUTH, FLOWER_AUTH_PROVIDER), "
    "or FLOWER_ADDRESS=127.0.0.1"
)


def start_flower(services, env: dict[str, str], *args: str):
    port = free_port()
    return services("flower", ["flower", f"--port={port}", *args], env), port


def test_flower_listens_on_this_host_only_by_default(service_env, services):
    flower, port = start_flower(services, service_env)
    flower.wait_for_log(r"Visit me at")
    addresses = wait_until(lambda: set(listening_addresses(flower.popen.pid).values()), 30, "Flower's socket")
    assert addresses == {("127.0.0.1", port)}
    assert requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=5).status_code == 200


def test_flower_starts_without_warnings_while_no_worker_answers(service_env, services):
    """Flower inspects the workers once at start, when under make run the worker is still booting."""
    flower, _ = start_flower(services, service_env, "--logging=debug")
    for method in ("stats", "active_queues", "registered", "conf"):  # each waits 1 s for answers, then logs
        flower.wait_for_log(rf"Inspect command {method} took")
    assert "Inspect method" not in flower.log(), flower.log()


@pytest.mark.parametrize(
    ("args", "env", "address"),
    [
        ([], {"FLOWER_ADDRESS": "0.0.0.0"}, "0.0.0.0"),
        (["--address=0.0.0.0"], {}, "0.0.0.0"),  # the compose file's way
        ([], {"FLOWER_ADDRESS": "::"}, "::"),
        ([], {"FLOWER_ADDRESS": "0.0.0.0", "FLOWER_BASIC_AUTH": ""}, "0.0.0.0"),  # Flower takes it as [""]
    ],
    ids=["FLOWER_ADDRESS", "--address", "ipv6-any", "empty-FLOWER_BASIC_AUTH"],
)
def test_flower_refuses_an_address_beyond_this_host_without_authentication(service_env, services, args, env, address):
    flower, port = start_flower(services, {**service_env, **env}, *args)
    assert flower.popen.wait(timeout=60) == 1
    log = flower.log()
    assert REFUSAL.format(address=address) in log.splitlines(), log
    assert "Visit me at" not in log


def test_flower_on_every_interface_with_basic_auth_asks_for_credentials(service_env, services):
    env = {**service_env, "FLOWER_ADDRESS": "0.0.0.0", "FLOWER_BASIC_AUTH": "ops:flower-exposure-pw"}
    flower, port = start_flower(services, env)
    flower.wait_for_log(r"Visit me at")
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: requests.get(f"{url}/healthcheck", timeout=5).ok, 30, "Flower")
    assert set(listening_addresses(flower.popen.pid).values()) == {("0.0.0.0", port)}
    assert requests.get(f"{url}/", timeout=5).status_code == 401
    assert requests.get(f"{url}/api/workers", timeout=5).status_code == 401
    assert requests.get(f"{url}/", auth=("ops", "wrong"), timeout=5).status_code == 401
    assert requests.get(f"{url}/", auth=("ops", "flower-exposure-pw"), timeout=5).status_code == 200


@pytest.mark.parametrize("address", ["localhost", "::1", "127.0.0.2"])
def test_flower_takes_any_loopback_address_without_authentication(service_env, services, address):
    flower, port = start_flower(services, {**service_env, "FLOWER_ADDRESS": address})
    flower.wait_for_log(r"Visit me at")
    assert "refusing" not in flower.log()
