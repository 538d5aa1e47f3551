#!/bin/sh
# Checks proto/envoy/ against Envoy's published API: every message, field,
# enum value and rpc we declare must have the same full name, number, type and
# label upstream. Needs a checkout (or bare mirror) of envoyproxy/data-plane-api
# or envoyproxy/envoy (its api/ directory):
#   proto/envoy/check_upstream.sh /path/to/data-plane-api[.git] [commit]
# Upstream's validate/udpa annotations are stripped before compiling; from
# base.proto only `message HeaderValue` is taken (the rest needs many imports).
set -eu
repo=$1
rev=${2:-HEAD}
here=$(cd "$(dirname "$0")/.." && pwd)   # proto/
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
show() { git -C "$repo" show "$rev:$1" 2>/dev/null || git -C "$repo" show "$rev:api/$1"; }
strip() {
  perl -0pe 's/^import "(udpa|validate|xds)\/[^"]*";\n//mg;
             s/option \((udpa|validate|xds)[^;]*;//g;
             s/\s*\[[^\]]*\((validate|udpa|xds)\.[^\]]*\]//g' 
}
for f in envoy/service/ratelimit/v3/rls.proto \
         envoy/extensions/common/ratelimit/v3/ratelimit.proto \
         envoy/type/v3/ratelimit_unit.proto envoy/type/v3/token_bucket.proto; do
  mkdir -p "$work/up/$(dirname "$f")"
  show "$f" | strip > "$work/up/$f"
done
mkdir -p "$work/up/envoy/config/core/v3"
{
  printf 'syntax = "proto3";\npackage envoy.config.core.v3;\n'
  show envoy/config/core/v3/base.proto | strip |
    perl -0ne 'print $1 if /^(message HeaderValue \{.*?^\})/ms'
} > "$work/up/envoy/config/core/v3/base.proto"
protoc -I "$work/up" --include_imports --descriptor_set_out="$work/up.pb" \
  envoy/service/ratelimit/v3/rls.proto envoy/config/core/v3/base.proto
protoc -I "$here" --include_imports --descriptor_set_out="$work/ours.pb" \
  envoy/service/ratelimit/v3/rls.proto envoy/type/v3/ratelimit_unit.proto
g++ -std=c++17 -O0 -o "$work/check" "$here/envoy/check_upstream.cc" \
  $(pkg-config --cflags --libs protobuf)
echo "upstream: $(git -C "$repo" rev-parse "$rev")"
"$work/check" "$work/ours.pb" "$work/up.pb"
