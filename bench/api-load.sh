#!/usr/bin/env bash
# Load test of GET /v1/runs/{id}/metrics on loopback: a run with a paper-length metric
# history (300 epochs: loss and accuracy on both splits plus intermediate accuracy and loss
# at 18 blocks = 40 rows per epoch, 12,000 rows) is reported through the worker endpoints
# and copied to 50 other runs, then wrk requests its test-accuracy series and its whole
# history, and curl times the figures of all 51 drawn together.
#   bench/api-load.sh [DURATION_SECONDS]   (needs wrk, jq, curl; a release stepwise-api)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-20}
source bench/api-stack.sh 18181

run=$(curl -sf -X POST "$API/v1/runs" -H 'Content-Type: application/json' -d '{"spec":
  {"model": {"arch": "resnet", "depth": 110}, "data": {"dataset": "shapes10"}, "train": {"epochs": 300}}}' | jq -r .id)
claim=$(curl -sf -X POST "$API/v1/worker/claim" -H 'Content-Type: application/json' \
  -d '{"kinds": ["train"], "worker": "load", "capacity": {"memory": "host", "budget_mib": 1024}}')
job=$(jq -r .job_id <<<"$claim"); token=$(jq -r .lease_token <<<"$claim")
for epoch in $(seq 1 300); do
  jq -nc --argjson e "$epoch" --arg t "$token" '{lease_token: $t, events: [{type: "epoch", epoch: $e, records: (
      [("loss", "accuracy") as $n | ("train", "test") as $s | {name: $n, split: $s, epoch: $e, value: (1 / $e)}]
    + [range(0; 18) as $b | ("intermediate_accuracy", "intermediate_loss") as $n
       | {name: $n, split: "test", epoch: $e, block: "s2.b\($b)", block_index: (36 + $b), value: 0.5}])}]}' |
    curl -sf -X POST "$API/v1/worker/jobs/$job/events" -H 'Content-Type: application/json' -d @- >/dev/null
done
# The table of a server that has trained a while: 50 more runs with the same history
# (submitted, their metrics copied in SQL), so that the queries must pick one run's rows.
for _ in $(seq 1 50); do
  curl -sf -X POST "$API/v1/runs" -H 'Content-Type: application/json' -d '{"spec":
    {"model": {"arch": "resnet", "depth": 20}, "data": {"dataset": "shapes10"}}}' >/dev/null
done
psql "$url" -qc "INSERT INTO metrics (run_id, name, split, epoch, block, block_index, value)
  SELECT r.id, m.name, m.split, m.epoch, m.block, m.block_index, m.value
    FROM metrics m CROSS JOIN runs r WHERE m.run_id = '$run' AND r.id <> '$run'; ANALYZE metrics"
rows=$(curl -sf "$API/v1/runs/$run/metrics" | jq length)
total=$(psql "$url" -tAc "SELECT count(*) FROM metrics")
echo "run $run: $rows metric rows ($total in the table); $(nproc) cores; wrk 2 threads, 32 connections, ${duration}s"
for query in "name=accuracy&split=test" ""; do
  echo "== GET /v1/runs/{id}/metrics?$query =="
  wrk -t2 -c32 -d"${duration}s" --latency "$API/v1/runs/$run/metrics?$query" |
    grep -E "Requests/sec|Latency  |50%|99%|Non-2xx|Socket errors"
done
# Every run drawn together (51 histories of 12,000 rows, the most a page of runs shows and
# then some): one request each, as a researcher comparing them would make.
ids=$(curl -sf "$API/v1/runs?limit=51" | jq -r '[.items[].id] | join(",")')
echo "== GET /v1/figures?runs=<51 runs> and one figure of them =="
curl -sf -o /dev/null -w "list: %{time_total} s\n" "$API/v1/figures?runs=$ids"
curl -sf -o /dev/null -w "curves.svg: %{time_total} s, %{size_download} bytes\n" \
  "$API/v1/figures/curves.svg?runs=$ids"
grep VmHWM "/proc/$api/status"
