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
#   --encryption optional: the suite sends plaintext messages (Chatalot refuses
#       them in encrypted rooms by default; see skip.txt);
#   --default-room-version 10: several csapi tests put the room creator in
#       power_levels.users, which room version 12 (our default) forbids; the
#       tests assume the older default of Synapse and Dendrite (10). Tests that
#       need v12 ask for it.
PORT=$1; DIR=$2; NAME=$3
mkdir -p "$DIR"
[ "${COMPLEMENT_SHIM_RESTART:-}" = 1 ] || rm -rf "$DIR/data"
cd "$DIR" || exit 1
nohup "${CHATALOT_BIN:?set CHATALOT_BIN}" serve --data-dir "$DIR/data" \
  --listen "127.0.0.1:$PORT" --server-name "$NAME" \
  --registration open --registration-shared-secret complement \
  --rate-limits off --encryption optional --default-room-version 10 \
  >>"$DIR/server.log" 2>&1 &
echo $!
