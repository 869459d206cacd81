# shellcheck shell=bash
# Sourced by the API benchmarks: a release stepwise-api (API_BIN, default
# target/release/stepwise-api, built if missing) on 127.0.0.1:$1 over a fresh database of
# the throw-away cluster of scripts/postgres, with an empty checkpoint store; both go when
# the script exits. Sets API (its URL), url (its database's), work (a scratch directory)
# and api (its pid).
api_bin=${API_BIN:-target/release/stepwise-api}
[ -x "$api_bin" ] || cargo build --release -p api
eval "$(scripts/postgres start)"
db="stepwise_bench_$$"
psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
url="${DATABASE_URL%/*}/$db"
work=$(mktemp -d)
DATABASE_URL=$url STEPWISE_BIND=127.0.0.1:$1 STEPWISE_CHECKPOINT_DIR=$work \
    STEPWISE_DATA_DIR=$work RUST_LOG=warn "$api_bin" 2>"$work/api.log" &
api=$!
trap 'kill $api 2>/dev/null; wait $api 2>/dev/null; psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; rm -rf "$work"' EXIT
API=http://127.0.0.1:$1
until curl -sf "$API/readyz" >/dev/null; do sleep 0.2; done
