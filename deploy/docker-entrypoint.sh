#!/bin/sh
# Migrate, then replace this shell with the server so it receives SIGTERM directly (graceful drain).
# With several replicas, run the migration once (a one-shot service) and set PROMPTPROXY_SKIP_UPGRADE=1 here.
set -e
if [ "${PROMPTPROXY_SKIP_UPGRADE:-0}" != "1" ]; then
    promptproxy db upgrade
fi
exec promptproxy serve --host 0.0.0.0 --port 8090 "$@"
