#!/usr/bin/env bash
# Fetch Swagger UI and ReDoc (served at /docs and /redoc) from the npm registry into app/static/vendor/.
#
# The API documentation must work without internet access, so the browser loads these files from the
# service itself rather than from a CDN. They are large minified vendor files, so they are fetched at setup
# time (make) instead of being committed. The tarballs are pinned by version and sha256.
#
# One change is made to ReDoc's bundle: its footer shows Redocly's logo from Redocly's CDN, which an offline
# browser fails to load (an error in the console) and an online one fetches from outside the service. The
# logo's two URLs are replaced by a small inline SVG of the name; the link to Redoc's site stays.
set -euo pipefail

SWAGGER_UI="swagger-ui-dist@5.35.0"
SWAGGER_UI_SHA256="1b8e891893404ea4c3558b6a87e2a3e494e7eedba41168c2ece5800a391a6ea6"
REDOC="redoc@3.0.1"
REDOC_SHA256="d9666cd5a1cb6c08c6d23f2433b025774a11354823d70357c8f506b988dac189"
REDOC_LOGO_URLS=("https://cdn.redoc.ly/redoc/logo-mini-full.svg" "https://cdn.redoc.ly/redoc/logo-mini.svg")
INLINE_LOGO="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='56' height='16'%3E%3Ctext x='0' y='13' font-family='sans-serif' font-size='13' fill='%23333'%3ERedoc%3C/text%3E%3C/svg%3E"
# Written into vendor/VERSIONS: a change of a version or of the bundle's edit fetches again.
STAMP="$SWAGGER_UI $REDOC logo-inline"

vendor="$(cd "$(dirname "$0")" && pwd)/vendor"
if [[ -f "$vendor/swagger-ui/swagger-ui-bundle.js" && -f "$vendor/redoc/redoc.standalone.js" \
      && "$(cat "$vendor/VERSIONS" 2>/dev/null)" == "$STAMP" ]]; then
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
for url in "${REDOC_LOGO_URLS[@]}"; do
  grep -qF "$url" "$staged/redoc/redoc.standalone.js" \
    || { echo "error: $REDOC no longer loads its logo from $url: review the edit above" >&2; exit 1; }
  sed -i "s|$url|$INLINE_LOGO|g" "$staged/redoc/redoc.standalone.js"
done
echo "$STAMP" > "$staged/VERSIONS"
printf '*\n' > "$staged/.gitignore"  # fetched, never committed

rm -rf "$vendor.old"
[[ -d "$vendor" ]] && mv "$vendor" "$vendor.old"
mv "$staged" "$vendor"
rm -rf "$vendor.old"
echo "fetched $SWAGGER_UI and $REDOC into $vendor"
