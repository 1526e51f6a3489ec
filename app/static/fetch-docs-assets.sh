#!/usr/bin/env bash
# Fetch Swagger UI and ReDoc (served at /docs and /redoc) from the npm registry into app/static/vendor/.
#
# The API documentation must work without internet access, so the browser loads these files from the
# service itself rather than from a CDN. They are large minified vendor files, so they are fetched at setup
# time (make) instead of being committed. The tarballs are pinned by version and sha256.
set -euo pipefail

SWAGGER_UI="swagger-ui-dist@5.35.0"
SWAGGER_UI_SHA256="1b8e891893404ea4c3558b6a87e2a3e494e7eedba41168c2ece5800a391a6ea6"
REDOC="redoc@3.0.1"
REDOC_SHA256="d9666cd5a1cb6c08c6d23f2433b025774a11354823d70357c8f506b988dac189"

vendor="$(cd "$(dirname "$0")" && pwd)/vendor"
if [[ -f "$vendor/swagger-ui/swagger-ui-bundle.js" && -f "$vendor/redoc/redoc.standalone.js" \
      && "$(cat "$vendor/VERSIONS" 2>/dev/null)" == "$SWAGGER_UI $REDOC" ]]; then
  exit 0  # already fetched
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch the API docs assets ($SWAGGER_UI, $REDOC)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$SWAGGER_UI" "$REDOC" >/dev/null)

unpack() {  # tarball, expected sha256, destination, files...
  local tarball="$1" sha="$2" dest="$3"
  shift 3
  echo "$sha  $tarball" | sha256sum --check --quiet - || { echo "error: $tarball has the wrong sha256" >&2; exit 1; }
  mkdir -p "$dest"
  tar xzf "$tarball" -C "$dest" --strip-components=1 "${@/#/package/}"
}
staged="$work/vendor"
unpack "$work"/swagger-ui-dist-*.tgz "$SWAGGER_UI_SHA256" "$staged/swagger-ui" \
  swagger-ui.css swagger-ui-bundle.js swagger-ui-standalone-preset.js LICENSE NOTICE
unpack "$work"/redoc-*.tgz "$REDOC_SHA256" "$staged/redoc" bundles/redoc.standalone.js LICENSE
mv "$staged/redoc/bundles/redoc.standalone.js" "$staged/redoc/" && rmdir "$staged/redoc/bundles"
echo "$SWAGGER_UI $REDOC" > "$staged/VERSIONS"
printf '*\n' > "$staged/.gitignore"  # fetched, never committed

rm -rf "$vendor.old"
[[ -d "$vendor" ]] && mv "$vendor" "$vendor.old"
mv "$staged" "$vendor"
rm -rf "$vendor.old"
echo "fetched $SWAGGER_UI and $REDOC into $vendor"
