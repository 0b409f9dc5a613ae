#!/bin/sh
# Compose's entrypoint for nats-server: deploy/nats.conf reads every user's
# password from NATS_<USER>_PASSWORD, and compose hands the passwords over as
# secret files (/run/secrets/nats-<user>-password), so export each file's
# content under its variable, then become nats-server with the arguments
# compose passes. Passwords never appear in `environment:` or in an image.
set -eu
for user in order payment shipping email ops admin; do
  file="/run/secrets/nats-$user-password"
  if [ ! -r "$file" ]; then
    echo "nats-entrypoint: missing secret $file" >&2
    exit 1
  fi
  var="NATS_$(echo "$user" | tr '[:lower:]' '[:upper:]')_PASSWORD"
  export "$var=$(cat "$file")"
done
exec nats-server "$@"
