#!/usr/bin/env bash
# End-to-end check of docker-compose.cluster.yml: build the image, start 3 hubs + 2 agents,
# wait for a leader on all three ports and for both agents, write settings, kill the leader's
# container, wait for a new leader, write again and read it from the surviving ports, then
# remove everything. Bounded: every wait has a deadline.
set -euo pipefail
cd "$(dirname "$0")/.."
compose() { if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi; }
file=docker-compose.cluster.yml
token="${MONSYS_ADMIN_TOKEN:-msa_compose_admin_token_change_me}"
export COMPOSE_PROJECT_NAME=monsys-smoke
cleanup() { compose -f "$file" down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

bash scripts/build-image.sh
cleanup
compose -f "$file" up -d

api() { curl -sf -m 5 -H "Authorization: Bearer $token" "$@"; }
wait_for() { # description, seconds, command…
  local what=$1 secs=$2; shift 2
  for _ in $(seq "$secs"); do if "$@" >/dev/null 2>&1; then echo "ok: $what"; return 0; fi; sleep 1; done
  echo "timed out: $what" >&2; compose -f "$file" logs --tail 30 >&2; return 1
}
leader_of() { api "http://127.0.0.1:$1/api/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"] or "")'; }
three_voters() { api http://127.0.0.1:8081/api/v1/cluster | python3 -c 'import json,sys; m=json.load(sys.stdin)["members"]; sys.exit(0 if sum(x["role"]=="voter" and x["live"] for x in m)==3 else 1)'; }
settings() { printf '{"refresh_interval_secs":%s,"registration_enabled":false,"agent_offline_after_secs":90,"integrity_check_interval_secs":600,"retention":{"raw_hours":48,"rollup_1m_days":14,"rollup_5m_days":90,"rollup_1h_days":730}}' "$1"; }
put() { api -X PUT -H 'Content-Type: application/json' "http://127.0.0.1:$1/api/v1/settings" -d "$(settings "$2")"; }
read_refresh() { api "http://127.0.0.1:$1/api/v1/settings" | python3 -c 'import json,sys; print(json.load(sys.stdin)["settings"]["refresh_interval_secs"])'; }
two_agents() { api http://127.0.0.1:8082/api/v1/agents | python3 -c 'import json,sys; a=json.load(sys.stdin)["agents"]; sys.exit(0 if len(a)==2 and all(x["batches"]>=1 for x in a) else 1)'; }

wait_for "three live voters" 120 three_voters
for p in 8081 8082 8083; do wait_for "leader known on :$p" 30 leader_of $p; done
put 8082 42 >/dev/null && [ "$(read_refresh 8083)" = 42 ] && echo "ok: write through :8082 read on :8083"
wait_for "both agents registered and reporting" 90 two_agents

leader=$(leader_of 8081)
echo "leader is hub$leader; killing its container"
compose -f "$file" kill "hub$leader"
survivors=()
for i in 1 2 3; do [ "$i" != "$leader" ] && survivors+=($((8080 + i))); done
new_leader() { l=$(leader_of "${survivors[0]}"); [ -n "$l" ] && [ "$l" != "$leader" ]; }
wait_for "a new leader" 60 new_leader
wait_for "a write after failover" 30 put "${survivors[0]}" 77
for p in "${survivors[@]}"; do [ "$(read_refresh "$p")" = 77 ] || { echo "port $p did not read 77" >&2; exit 1; }; done
echo "ok: new leader hub$(leader_of "${survivors[0]}"), write and reads on ${survivors[*]}"
echo "compose smoke test passed"
