#!/usr/bin/env bash
# Type-check Grafana dashboard JSON files against the TypeScript types of npm @grafana/schema
# (no Grafana server is needed). Each JSON file becomes the initializer of
#     export const dashboard: Loose<Dashboard> = <the JSON>;
# and `tsc --noEmit` must accept it. Two documented workarounds (research/ecosystem.md §6), nothing
# else is relaxed:
#   1. Loose<T> maps TypeScript string enums to their string values (JSON holds "absolute", not
#      ThresholdsMode.Absolute);
#   2. strictNullChecks is off (JSON `null` for an optional value).
# A structural lint, not a guarantee that Grafana accepts the dashboard: panels are a union type, so
# e.g. a misspelt optional panel key is not caught.
#
# Usage: grafana/check_dashboard.sh [dashboard.json ...]   (default: grafana/dashboards/*.json)
#        grafana/check_dashboard.sh --install-only           (only install the npm packages)
# Installs @grafana/schema@13.2.3 and typescript@5 into grafana/.npm/ (git-ignored) when missing;
# GRAFANA_NPM_DIR overrides that folder. Exit status: 0 all files pass, 1 a type error, 2 usage/setup.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NPM_DIR="${GRAFANA_NPM_DIR:-$HERE/.npm}"
SCHEMA_VERSION="13.2.3"
TS_MAJOR="5"

installed_version() {  # $1: package name -> its installed version, or nothing
    local pj="$NPM_DIR/node_modules/$1/package.json"
    [ -f "$pj" ] && node -p "require(process.argv[1]).version" "$pj" 2>/dev/null || true
}

ensure_npm() {
    command -v node >/dev/null && command -v npm >/dev/null || {
        echo "check_dashboard: node and npm are required" >&2; exit 2; }
    local schema ts
    schema="$(installed_version @grafana/schema)"
    ts="$(installed_version typescript)"
    if [ "$schema" != "$SCHEMA_VERSION" ] || [ "${ts%%.*}" != "$TS_MAJOR" ]; then
        mkdir -p "$NPM_DIR"
        echo "check_dashboard: npm install @grafana/schema@$SCHEMA_VERSION typescript@$TS_MAJOR into $NPM_DIR" >&2
        npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error \
            "@grafana/schema@$SCHEMA_VERSION" "typescript@$TS_MAJOR" >&2
    fi
}

if [ "${1:-}" = "--install-only" ]; then     # used by .ci/setup-extras
    ensure_npm
    exit 0
fi
if [ "$#" -gt 0 ]; then
    files=("$@")
else
    shopt -s nullglob
    files=("$HERE"/dashboards/*.json)
    shopt -u nullglob
fi
[ "${#files[@]}" -gt 0 ] || { echo "check_dashboard: no dashboard JSON files" >&2; exit 2; }

ensure_npm
# The .ts files must sit under $NPM_DIR so that "@grafana/schema" resolves to its node_modules.
work="$(mktemp -d "$NPM_DIR/check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Everything before the JSON goes on the JSON's first line, so a tsc line number is a JSON line number.
header='import type { Dashboard } from "@grafana/schema"; type Loose<T> = T extends string ? `${T}` : T extends (infer U)[] ? Loose<U>[] : T extends object ? { [K in keyof T]: Loose<T[K]> } : T; export const dashboard: Loose<Dashboard> = '

status=0
for f in "${files[@]}"; do
    [ -f "$f" ] || { echo "check_dashboard: $f: no such file" >&2; exit 2; }
    # Valid JSON first (a TS object literal accepts more than JSON does).
    node -e 'try { JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); }
             catch (e) { console.error(e.message); process.exit(1); }' "$f" || {
        echo "check_dashboard: FAILED $f: not valid JSON" >&2; status=1; continue; }
    ts="$(basename "$f" .json).ts"
    { printf '%s' "$header"; cat "$f"; printf ';\n'; } > "$work/$ts"
    if out="$(cd "$work" && "$NPM_DIR/node_modules/.bin/tsc" --noEmit --pretty false --strict --strictNullChecks false \
                --moduleResolution bundler --module esnext --target es2022 --skipLibCheck "$ts" 2>&1)"; then
        echo "check_dashboard: OK $f"
    else
        status=1
        # Report positions against the JSON file (same line numbers; column is off on line 1 only).
        printf '%s\n' "$out" | sed "s|^$ts(|$f(|" >&2
        echo "check_dashboard: FAILED $f" >&2
    fi
done
exit "$status"
