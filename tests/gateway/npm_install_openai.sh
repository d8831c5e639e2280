#!/bin/sh
# Installs the official `openai` npm client into the build folder (once) for gateway.openai_client.
# Fails on any npm error except one: the registry cannot be reached or its TLS chain is not
# trusted from this machine (an offline or proxied box), which is not a defect of ours; then it
# skips (77) naming the npm error code, and gateway.openai_client skips too.
#   usage: npm_install_openai.sh NPM PREFIX
npm=$1; prefix=$2
test -f "$prefix/node_modules/openai/package.json" && exit 0
log=$(mktemp); trap 'rm -f "$log"' EXIT
"$npm" install --no-audit --no-fund --loglevel=error --prefix "$prefix" openai@4 >"$log" 2>&1
rc=$?
cat "$log"
[ $rc -eq 0 ] && exit 0
code=$(sed -n 's/^npm ERR! code \([A-Z_0-9]*\).*/\1/p' "$log" | head -n 1)
case $code in
  ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_HAS_EXPIRED)
    echo "SKIP: the npm registry is unreachable from this machine ($code); the openai client test needs it"
    exit 77 ;;
esac
echo "FAIL: npm install openai@4 exited $rc (${code:-no npm error code})"
exit 1
