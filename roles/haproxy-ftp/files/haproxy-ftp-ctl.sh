#!/bin/sh
# Reload, verification and bookkeeping steps of the haproxy-ftp role, run on the edge host as
# `sh -s -- COMMAND ARGS` with this file on stdin (ansible.builtin.command: one pipelined
# module call, where ansible.builtin.script would copy the file over first). Needs ss
# (iproute2), and socat for the socket commands. On success prints one line of key=value
# pairs; on failure prints the reason on stderr and exits 1.
#
#   haproxy-ftp-ctl.sh master-reload  MASTER_SOCKET TIMEOUT  reload through the master CLI
#   haproxy-ftp-ctl.sh info-pid       STATS_SOCKET           pid of the serving process
#   haproxy-ftp-ctl.sh wait-new-pid   STATS_SOCKET OLD_PID TIMEOUT
#   haproxy-ftp-ctl.sh wait-listening CONFIG TIMEOUT         every bind of CONFIG listens
#   haproxy-ftp-ctl.sh apply-weights  OLD NEW STATS_SOCKET MARK
#       set on the serving worker the weights NEW changes for servers OLD (the file in
#       service, per MARK) has too; "runtime=applied" when NEW differs from OLD in nothing else
#       (comments aside), else "runtime=no reason=..." and the caller reloads
#   haproxy-ftp-ctl.sh in-service     CONFIG MARK SUM OWNER GROUP KEEP
#       record SUM (the sha1 of CONFIG now serving) in MARK, and remove the backups of CONFIG
#       (CONFIG.<pid>.<date>@<time>~, as ansible.builtin.template names them) beyond the KEEP
#       newest
set -eu

fail() { echo "$*" >&2; exit 1; }

cli() { printf '%s\n' "$2" | socat -t 2 stdio "unix-connect:$1" 2>/dev/null; }

# "show proc" of 2.6: the master's line carries "[failed: N]", the running workers follow
# "# workers", the ones still draining old sessions follow "# old workers".
failed_count() { printf '%s\n' "$1" | sed -n 's/.*master.*\[failed: \([0-9]*\)\].*/\1/p'; }
current_workers() {
  printf '%s\n' "$1" | awk '/^# /{ section = $2 } section == "workers" && $2 == "worker" { print $1 }'
}

# Stick tables survive a reload only through the local peer: the new worker asks the old one
# for a full resync. A worker that has not finished its own resync cannot teach the next one,
# so a second reload within that time loses every entry (and the data connections of sessions
# opened before it go by the hash alone). A section's resync is over once bit 0x2 of its
# flags is set ("show peers": 0x1103 after a teach, 0x33 after the resync timeout, 5 s after
# a fresh start).
peers_synced() {
  printf '%s\n' "$1" | awk '
    /^0x[0-9a-f]+: / && / flags=0x/ { n++; f = $0; sub(/.* flags=0x/, "", f); sub(/ .*/, "", f)
      v = 0; for (i = 1; i <= length(f); i++) v = v * 16 + index("0123456789abcdef", substr(f, i, 1)) - 1
      if (int(v / 2) % 2 == 0) bad++ }
    END { exit bad > 0 }'
}

# wait_peers SOCKET PREFIX TIMEOUT: waits for the peers resync of the worker PREFIX addresses
# ("@1 " through the master socket, "" on a stats socket). Prints the time it waited, or
# "peers_timeout" when the resync did not finish in time (entries may be lost; not fatal).
wait_peers() {
  sock=$1 prefix=$2 timeout=$3 i=0
  while [ "$i" -lt $((timeout * 20)) ]; do
    out=$(cli "$sock" "${prefix}show peers") || out=""
    if [ -n "$out" ] && peers_synced "$out"; then
      echo "peers_synced_after_ms=$((i * 50))"
      return 0
    fi
    sleep 0.05
    i=$((i + 1))
  done
  echo "peers_timeout=${timeout}s"
}

master_reload() {
  sock=$1 timeout=$2
  before=$(cli "$sock" "show proc") ||
    fail "no HAProxy master answers on $sock (is HAProxy running as haproxy -W -S $sock?)"
  f0=$(failed_count "$before")
  [ -n "$f0" ] || fail "unexpected answer to 'show proc' on $sock"
  w0=" $(current_workers "$before" | tr '\n' ' ')"
  # the serving worker must be able to teach its stick tables to the new one
  pre=$(wait_peers "$sock" "@1 " 6)
  # 2.6 answers nothing to "reload" and re-executes the master: poll for the outcome.
  cli "$sock" reload >/dev/null || true
  new="" i=0
  while [ "$i" -lt $((timeout * 10)) ]; do
    sleep 0.1
    i=$((i + 1))
    out=$(cli "$sock" "show proc") || continue
    f=$(failed_count "$out")
    [ -n "$f" ] || continue # the master is still re-executing itself
    if [ "$f" -gt "$f0" ]; then
      fail "HAProxy refused the new configuration at reload (master failed counter $f0 -> $f; see its log); the old worker still serves"
    fi
    for p in $(current_workers "$out"); do
      case "$w0" in *" $p "*) ;; *) new=$p ;; esac
    done
    [ -n "$new" ] && break
  done
  [ -n "$new" ] || fail "no new HAProxy worker within ${timeout}s after reload"
  # A worker that dies right after it started shows up here, not in the first answer.
  sleep 0.5
  # (The failed counter is no witness any more: a successful reload resets it to 0.)
  out=$(cli "$sock" "show proc") || fail "the HAProxy master stopped answering after the reload"
  current_workers "$out" | grep -qx "$new" || fail "the new HAProxy worker $new exited right after the reload"
  # and the new one has learnt them before the run ends: the next reload may follow at once
  post=$(wait_peers "$sock" "@1 " 6)
  echo "new_worker=$new old_workers=$(echo $w0 | tr ' ' ',') before_reload_$pre after_reload_$post"
}

info_pid() {
  cli "$1" "show info" | sed -n 's/^Pid: \([0-9]*\).*/\1/p'
}

wait_new_pid() {
  sock=$1 old=$2 timeout=$3 i=0
  while [ "$i" -lt $((timeout * 10)) ]; do
    pid=$(info_pid "$sock" || true)
    if [ -n "$pid" ] && [ "$pid" != "$old" ]; then
      echo "new_pid=$pid old_pid=$old $(wait_peers "$sock" "" 6)"
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  fail "HAProxy still runs as pid ${old:-?} ${timeout}s after the reload (stats socket $sock): the reload did not take"
}

# The binds of a config as "address port" lines; "*" for a wildcard address.
binds() {
  awk '$1 == "bind" { print $2 }' "$1" | while read -r b; do
    case $b in /* | unix@* | abns@* | fd@* | sockpair@*) continue ;; esac
    b=${b#ipv4@}
    b=${b#ipv6@}
    addr=${b%:*} ports=${b##*:}
    case $addr in "" | "*" | 0.0.0.0 | ::) addr="*" ;; esac
    lo=${ports%-*} hi=${ports#*-}
    p=$lo
    while [ "$p" -le "$hi" ]; do
      echo "$addr $p"
      p=$((p + 1))
    done
  done
}

# Prints the binds of the config that nothing listens on, in ss's address notation.
missing() {
  have=$(ss -ltnH | awk '{ print $4 }' | tr '\n' ' ')
  binds "$1" | awk -v have="$have" '
    BEGIN { n = split(have, h, " "); for (i = 1; i <= n; i++) up[h[i]] = 1 }
    $1 == "*" { if (!(("0.0.0.0:" $2) in up) && !(("*:" $2) in up) && !(("[::]:" $2) in up)) print "*:" $2; next }
    index($1, ":") { a = "[" $1 "]:" $2; if (!(a in up)) print a; next }
    { a = $1 ":" $2; if (!(a in up)) print a }'
}

wait_listening() {
  cfg=$1 timeout=$2 i=0
  [ -r "$cfg" ] || fail "cannot read $cfg"
  while :; do
    m=$(missing "$cfg")
    if [ -z "$m" ]; then
      echo "listening=$(binds "$cfg" | wc -l)"
      return 0
    fi
    [ "$i" -ge $((timeout * 10)) ] && break
    sleep 0.1
    i=$((i + 1))
  done
  fail "not listening ${timeout}s after the reload: $(echo "$m" | head -n 10 | tr '\n' ' ')($(echo "$m" | wc -l) missing)"
}

# A config without its comments and without "weight 0" on server lines: two configs of the
# same shape differ only in which nodes are drained.
shape() {
  awk '$1 ~ /^#/ { next }
    $1 == "server" { for (i = 3; i < NF; i++) if ($i == "weight" && $(i + 1) == "0") { $i = ""; $(i + 1) = "" }
      $0 = $0; $1 = $1 }
    { print }' "$1"
}

# "<section>/<server> <weight>" for every server line, in file order.
weights() {
  awk '$1 == "backend" || $1 == "listen" { sec = $2 }
    $1 == "server" { w = 1; for (i = 3; i < NF; i++) if ($i == "weight") w = $(i + 1); print sec "/" $2, w }' "$1"
}

apply_weights() {
  old=$1 new=$2 sock=$3 mark=$4
  [ -r "$old" ] && [ -r "$new" ] && [ -r "$mark" ] || { echo "runtime=no reason=no-previous-config"; return 0; }
  [ "$(sha1sum "$old" | cut -d' ' -f1)" = "$(cat "$mark")" ] ||
    { echo "runtime=no reason=previous-config-not-in-service"; return 0; }
  tmp=$(mktemp -d) || fail "cannot create a temporary directory"
  trap 'rm -rf "$tmp"' EXIT
  weights "$old" >"$tmp/wold" && weights "$new" >"$tmp/wnew" || fail "cannot read $old or $new"
  # The servers of both files whose weight changes. Set even when the shape changes too: the
  # serving worker then hashes like the new one during the reload's overlap.
  awk 'NR == FNR { w[$1] = $2; next } ($1 in w) && w[$1] != $2 { print "set weight " $1 " " $2 }' \
    "$tmp/wold" "$tmp/wnew" >"$tmp/cmds"
  n=$(wc -l <"$tmp/cmds")
  # Control backends come before their passive twins in the file: a node is drained in both
  # within one batch of 100 commands (one connection, ";"-separated), or undrained the same way.
  if [ "$n" -gt 0 ]; then
    split -l 100 "$tmp/cmds" "$tmp/batch."
    for b in "$tmp"/batch.*; do
      out=$(cli "$sock" "$(paste -s -d ';' "$b")") || { echo "runtime=no reason=stats-socket-unreachable"; return 0; }
      # "set weight" answers nothing on success.
      if [ -n "$(printf '%s' "$out" | tr -d '[:space:]')" ]; then
        echo "runtime=no reason=set-weight-refused:$(printf '%s' "$out" | tr -s '[:space:]' ' ' | cut -c1-200)"
        return 0
      fi
    done
  fi
  shape "$old" >"$tmp/old" && shape "$new" >"$tmp/new" || fail "cannot read $old or $new"
  if cmp -s "$tmp/old" "$tmp/new"; then
    echo "runtime=applied weights_changed=$n"
  else
    echo "runtime=no reason=shape-changed weights_set_before_reload=$n"
  fi
}

in_service() {
  cfg=$1 mark=$2 sum=$3 owner=$4 group=$5 keep=$6
  dir=$(dirname "$cfg") base=$(basename "$cfg")
  tmp="$mark.tmp.$$"
  printf '%s\n' "$sum" >"$tmp" && chown "$owner:$group" "$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$mark" ||
    { rm -f "$tmp"; fail "cannot record the configuration in service in $mark"; }
  # The role's path checks allow only [A-Za-z0-9_./@+-] in CONFIG: "." and "+" need escaping.
  re="^$(printf '%s' "$base" | sed 's/[.+]/\\&/g')\.[0-9]+\.[0-9-]+@[0-9:]+~\$"
  removed=0
  for old in $(ls -1t "$dir" | grep -E "$re" | tail -n +$((keep + 1))); do
    rm -f "$dir/$old" || fail "cannot remove the old backup $dir/$old"
    removed=$((removed + 1))
  done
  echo "in_service=$sum backups_removed=$removed"
}

need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is required on the edge host ($2)"; }
case ${1:-} in
  master-reload) need socat "socat package"; master_reload "$2" "$3" ;;
  info-pid) need socat "socat package"; info_pid "$2" ;;
  wait-new-pid) need socat "socat package"; wait_new_pid "$2" "$3" "$4" ;;
  wait-listening) need ss "iproute2 package"; wait_listening "$2" "$3" ;;
  apply-weights) need socat "socat package"; apply_weights "$2" "$3" "$4" "$5" ;;
  in-service) in_service "$2" "$3" "$4" "$5" "$6" "$7" ;;
  *) fail "usage: haproxy-ftp-ctl.sh master-reload|info-pid|wait-new-pid|wait-listening|apply-weights|in-service ..." ;;
esac
