#!/bin/sh
# Complement's start command (see scripts/complement): start.sh PORT DATADIR SERVER_NAME
# starts one Chatalot homeserver on 127.0.0.1:PORT and prints its PID.
# COMPLEMENT_SHIM_RESTART=1 keeps DATADIR (a test restarting the server).
#
# The flags are what a real deployment could choose; each one that differs
# from the defaults says why:
#   --registration open, --registration-shared-secret: the suite registers its
#       own users with /register and the admin register endpoint;
#   --rate-limits off: the suite sends bursts from one address;
#   --encryption optional: the suite sends plaintext messages (Chatalot encrypts
#       every new room and refuses plaintext in it by default);
#   --access-token-lifetime 1h: clients that ask for refresh tokens get them
#       (the suite's refresh-token tests; off by default, tokens never expire);
#   --server-notices-user _server: the suite expects notices from @_server.
#   --unauthenticated-media: the suite downloads through the deprecated
#       /_matrix/media/v3 endpoints, which Chatalot freezes by default.
#   --password-min-length 6: the suite's fixed passwords include "hunter2" and
#       "secret" (the default asks for 8 characters).
#   --profile-lookup open: the suite reads profiles without a token, as the
#       spec lets servers allow (Chatalot asks for one and limits lookups to
#       the user directory's scope by default).
#   --default-room-version 10: several csapi tests put the room creator in
#       power_levels.users when they name no version, which room version 12
#       (Chatalot's default, as the spec recommends) forbids; Synapse and
#       Dendrite still default to 10. The v12 tests name their version.
PORT=$1; DIR=$2; NAME=$3
mkdir -p "$DIR"
[ "${COMPLEMENT_SHIM_RESTART:-}" = 1 ] || rm -rf "$DIR/data"
cd "$DIR" || exit 1
nohup "${CHATALOT_BIN:?set CHATALOT_BIN}" serve --data-dir "$DIR/data" \
  --listen "127.0.0.1:$PORT" --server-name "$NAME" \
  --registration open --registration-shared-secret complement \
  --rate-limits off --encryption optional --unauthenticated-media \
  --access-token-lifetime 1h --server-notices-user _server --password-min-length 6 \
  --profile-lookup open --default-room-version 10 \
  >>"$DIR/server.log" 2>&1 &
echo $!
