#!/bin/sh
# One-shot set-up of the compose stack (the `init` service), run before web, worker, beat and flower start:
# with INIT_DEMO_DATA=true (the default), create the shipped schema and load demo data when the database has
# no interactions yet, as `make run` does; with false, leave the database alone (an existing NestJS database
# read through the SQL_* queries). Then make sure a model is served, so the web's first request finds one:
# nothing to do if Redis's pointer names a version that loads from the `models` volume; if not (Redis kept its
# data but the volume was dropped, or Redis is empty), publish the volume's current model again, or train one
# (tasks.bootstrap, run in this process: no worker runs yet). A non-zero exit (e.g. no data to train on)
# keeps the other services from starting; its output says why.
set -eu

case "${INIT_DEMO_DATA:-true}" in
  true)
    python -m ml.db init
    counts="$(python -m ml.db count)"  # an assignment, so `set -e` stops here if the count fails
    if printf '%s\n' "$counts" | grep -qx 'interactions 0'; then
      echo "the database has no interactions: loading demo data"
      demo_dir="$(mktemp -d)"
      python -m ml.demo --out "$demo_dir"
      python -m ml.db load "$demo_dir"
      rm -rf "$demo_dir"
    fi
    ;;
  false) ;;
  *)
    echo "error: INIT_DEMO_DATA=${INIT_DEMO_DATA} is invalid: must be true or false" >&2
    exit 2
    ;;
esac

exec python -m tasks.bootstrap
