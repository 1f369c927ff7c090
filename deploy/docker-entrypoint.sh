#!/bin/sh
# The image's entrypoint. With no arguments, or options only (`--threads 64`): migrate (unless
# PROMPTPROXY_SKIP_UPGRADE=1, as the replicas behind a one-shot migration set), then replace this shell with
# `promptproxy serve OPTIONS` so the server receives SIGTERM directly (graceful drain).
# With a command, run it instead: `promptproxy create-admin ...`, `promptproxy db upgrade`, `sh`; a bare
# subcommand (`create-admin ...`, `user list`) is given to promptproxy.
set -e
case "${1:-}" in
    "" | -*)
        if [ "${PROMPTPROXY_SKIP_UPGRADE:-0}" != "1" ]; then
            promptproxy db upgrade
        fi
        exec promptproxy serve "$@"
        ;;
esac
if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec promptproxy "$@"
