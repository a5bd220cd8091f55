#!/usr/bin/env bash
# kubeftp-edge lab: a whole passive-FTP data path built only from network namespaces that this
# script creates. Nothing is ever sent outside them or loopback; a blackhole route for the lab's
# /16 in the root namespace drops anything that would leak.
#
#   root ns (Ansible controller, test runner)  NET.1.254 --+
#   <p>-client  eth0  NET.1.10 .. NET.1.(9+CLIENTS)      --+-- br-pub   (bridges live in <p>-sw)
#   <p>-e<i>    eth0  NET.1.<i>   sshd :22, HAProxy      --+   (edges 10..40: NET.1.(100+i), NET.2.(200+i))
#   <p>-e<i>    eth1  NET.2.<i>                          --+
#   <p>-n<k>    eth0  NET.2.(10+k)                       --+-- br-node
#       NodePorts like kube-proxy: nat DNAT to the pod + MASQUERADE towards the pods
#   <p>-n<k>    eth1  NET.3.(10+k)                       --+
#   <p>-pod     eth0  NET.3.1     vsftpd :21 (anonymous, FTPS optional), pasv range   --+-- br-pod
#
# usage: lab.sh [flags] COMMAND [args]
#   up | down | status | smoke [EDGE]
#   node-fail K | node-restore K           remove / restore every NodePort of node K (RST)
#   node-linkdown K | node-linkup K        node K unreachable (timeouts) / back
#   nodeport-add NODES CTRL_NODEPORT PASV_MIN PASV_MAX +OFFSET|NP,NP,.. [POD_IP] [CTRL_PORT]
#   nodeport-del NODES CTRL_NODEPORT       NODES: "all" or a list like 1,3
#   nodeport-list K
#   healthz K PORT ok|fail|off             kube-proxy's /healthz of a Local Service on node K
#   edge-sshd stop|start I
#   vsftpd-restart MIN MAX                 the pod restarts with passive range MIN-MAX
#   haproxy-start I | haproxy-stop I | haproxy-reload I | master-cli I CMD | stats-cli I CMD
#   exec NS CMD...                         NS: client, pod, sw, e<i>, n<k>
#   env                                    print the lab's parameters and paths (shell syntax)
# flags (and env):
#   -p, --prefix   LAB_PREFIX   namespace prefix, at most 10 characters       (kfe)
#   -n, --net      LAB_NET      first two octets of the lab's private /16      (10.213)
#       --nodes    LAB_NODES    Kubernetes nodes, 1..99                        (3)
#       --edges    LAB_EDGES    edge hosts, 1..40                              (1)
#       --clients  LAB_CLIENTS  source addresses of the client namespace, 1..40 (6)
#   -d, --dir      LAB_DIR      run dir: keys, inventory, configs, logs    (/tmp/kubeftp-lab-<prefix>)
#   LAB_CTRL_NODEPORT=30021 LAB_PASV_MIN=21100 LAB_PASV_MAX=21110 LAB_PASV_OFFSET=11000: the
#   NodePorts `up` gives the vsftpd pod on every node.
# needs: root, iproute2, iptables, haproxy, vsftpd, openssh-server, openssl, socat, curl, lftp.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "lab.sh: $*" >&2; exit 1; }

# --- parameters: flags > environment > the run dir's lab.env (written by up) > defaults ---
declare -A SET=()
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--prefix)  SET[PREFIX]=${2:?}; shift 2 ;;
    -n|--net)     SET[NET]=${2:?}; shift 2 ;;
    --nodes)      SET[NODES]=${2:?}; shift 2 ;;
    --edges)      SET[EDGES]=${2:?}; shift 2 ;;
    --clients)    SET[CLIENTS]=${2:?}; shift 2 ;;
    -d|--dir)     SET[DIR]=${2:?}; shift 2 ;;
    -h|--help)    usage ;;
    --)           shift; break ;;
    -*)           die "unknown flag $1" ;;
    *)            break ;;
  esac
done
for v in PREFIX NET NODES EDGES CLIENTS DIR CTRL_NODEPORT PASV_MIN PASV_MAX PASV_OFFSET; do
  e=LAB_$v
  if [ -z "${SET[$v]:-}" ] && [ -n "${!e:-}" ]; then SET[$v]=${!e}; fi
done
P=${SET[PREFIX]:-kfe}
DIR=${SET[DIR]:-/tmp/kubeftp-lab-$P}
[[ $P =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "prefix '$P': want [a-z][a-z0-9]{0,9} (interface names are short)"
[[ $DIR = /* ]] || die "run dir '$DIR' must be an absolute path"
if [ -f "$DIR/lab.env" ]; then
  # shellcheck disable=SC1091
  . "$DIR/lab.env"
fi
NET=${SET[NET]:-${L_NET:-10.213}}
NODES=${SET[NODES]:-${L_NODES:-3}}
EDGES=${SET[EDGES]:-${L_EDGES:-1}}
CLIENTS=${SET[CLIENTS]:-${L_CLIENTS:-6}}
CTRL_NODEPORT=${SET[CTRL_NODEPORT]:-${L_CTRL_NODEPORT:-30021}}
PASV_MIN=${SET[PASV_MIN]:-${L_PASV_MIN:-21100}}
PASV_MAX=${SET[PASV_MAX]:-${L_PASV_MAX:-21110}}
PASV_OFFSET=${SET[PASV_OFFSET]:-${L_PASV_OFFSET:-11000}}
[[ $NET =~ ^(10\.[0-9]{1,3}|172\.(1[6-9]|2[0-9]|3[01])|192\.168)$ ]] || die "net '$NET': want the first two octets of a private /16, e.g. 10.213"
[[ $NET != 10.* ]] || [ "${NET#10.}" -le 255 ] || die "net '$NET': octet out of range"
int_in() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
int_in "$NODES" 1 99 || die "nodes '$NODES': want 1..99"
int_in "$EDGES" 1 40 || die "edges '$EDGES': want 1..40"
int_in "$CLIENTS" 1 40 || die "clients '$CLIENTS': want 1..40"
for v in CTRL_NODEPORT PASV_MIN PASV_MAX; do int_in "${!v}" 1 65535 || die "$v '${!v}': want a port"; done
[ "$PASV_MIN" -le "$PASV_MAX" ] || die "passive range $PASV_MIN-$PASV_MAX is empty"
int_in "$((PASV_MAX + PASV_OFFSET))" 1 65535 || die "passive offset $PASV_OFFSET leaves the port range"

ROOT_IP=$NET.1.254 POD_IP=$NET.3.1
RUN=$DIR/run LOG=$DIR/log SSHDIR=$DIR/ssh
# edges 10 and up sit above the clients (NET.1.10..49) and the nodes (NET.2.11..109)
edge_ip()      { if [ "$1" -le 9 ]; then echo "$NET.1.$1"; else echo "$NET.1.$((100 + $1))"; fi; }
edge_node_ip() { if [ "$1" -le 9 ]; then echo "$NET.2.$1"; else echo "$NET.2.$((200 + $1))"; fi; }
node_ip()      { echo "$NET.2.$((10 + $1))"; }
node_pod_ip()  { echo "$NET.3.$((10 + $1))"; }
client_ip()    { echo "$NET.1.$((9 + $1))"; }
edge_dir()     { echo "$DIR/e$1"; }
nsname()       { echo "$P-$1"; }
ns()           { ip netns exec "$P-$1" "${@:2}"; }
has_ns()       { [ -e "/run/netns/$P-$1" ]; }

# --- processes: started here, recorded in pid files, stopped only after checking their name ---
alive() {  # pidfile comm
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] &&
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

descendants() {  # every descendant of $1, deepest last
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do echo "$c"; descendants "$c"; done
}

stop_pidfile() {  # pidfile comm: SIGTERM the recorded daemon and its descendants, wait, then SIGKILL
  local f=$1 comm=$2 pid kids p _
  alive "$f" "$comm" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kids=$(descendants "$pid")
  kill "$pid" $kids 2>/dev/null || true
  for _ in $(seq 50); do
    alive "$f" "$comm" || break
    sleep 0.1
  done
  if alive "$f" "$comm"; then kill -KILL "$pid" 2>/dev/null || true; fi
  for p in $kids; do
    if [ -e "/proc/$p" ]; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  rm -f "$f"
}

start_daemon() {  # name ns comm cmd... ; the daemon runs in the foreground, in its own session
  local name=$1 n=$2 comm=$3 pid _
  shift 3
  # setsid and ip-netns-exec both exec: $! is the daemon itself
  setsid ip netns exec "$P-$n" "$@" </dev/null >>"$LOG/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$RUN/$name.pid"
  for _ in $(seq 50); do
    alive "$RUN/$name.pid" "$comm" && return 0
    sleep 0.05
  done
  die "$name did not start; see $LOG/$name.log"
}

listening() {  # ns addr port
  [ -n "$(ns "$1" ss -Hltn "src $2 and sport = :$3" 2>/dev/null)" ]
}

wait_listening() {  # ns addr port what
  local _
  for _ in $(seq 100); do
    listening "$1" "$2" "$3" && return 0
    sleep 0.05
  done
  die "$4 is not listening on $2:$3"
}

# --- network ---
wire() {  # ns ifname sw-ifname bridge: a veth from namespace $1 to bridge $4 in the switch ns
  ip link add name "$2" netns "$P-$1" type veth peer name "$3" netns "$P-sw"
  ip -n "$P-sw" link set "$3" master "$4" up
  ip -n "$P-$1" link set "$2" up
}

all_ns() {
  local i
  echo sw client pod
  for i in $(seq 1 "$EDGES"); do echo "e$i"; done
  for i in $(seq 1 "$NODES"); do echo "n$i"; done
}

net_preflight() {
  local other
  other=$(ip -4 -o addr show | awk -v net="$NET." -v me="$P-root" 'index($4, net) == 1 && $2 != me {print $2}')
  [ -z "$other" ] || die "net $NET.0.0/16 is already used by interface(s) $(echo "$other" | tr '\n' ' '); pick another LAB_NET"
  if ip -o route show | grep -q "^$NET\.1\.0/24 "; then
    die "a route for $NET.1.0/24 exists already (another lab?): $(ip -o route show "$NET.1.0/24")"
  fi
}

net_up() {
  local n i
  net_preflight
  for n in $(all_ns); do
    ip netns add "$P-$n"
    ip -n "$P-$n" link set lo up
    ns "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  for n in br-pub br-node br-pod; do
    ip -n "$P-sw" link add "$n" type bridge
    ip -n "$P-sw" link set "$n" up
  done
  # public segment: clients, edges, the root namespace
  wire client eth0 c-pub br-pub
  for i in $(seq 1 "$CLIENTS"); do ip -n "$P-client" addr add "$(client_ip "$i")/24" dev eth0; done
  for i in $(seq 1 "$EDGES"); do
    wire "e$i" eth0 "e$i-pub" br-pub
    ip -n "$P-e$i" addr add "$(edge_ip "$i")/24" dev eth0
    wire "e$i" eth1 "e$i-node" br-node
    ip -n "$P-e$i" addr add "$(edge_node_ip "$i")/24" dev eth1
  done
  ip link add name "$P-root" type veth peer name root-pub netns "$P-sw"
  sysctl -qw "net.ipv6.conf.$P-root.disable_ipv6=1"
  ip -n "$P-sw" link set root-pub master br-pub up
  ip addr add "$ROOT_IP/24" dev "$P-root"
  ip link set "$P-root" up
  # safety net: the rest of the /16 is dropped in the root namespace, never routed outside
  ip route replace blackhole "$NET.0.0/16"
  wire pod eth0 pod-eth0 br-pod
  ip -n "$P-pod" addr add "$POD_IP/24" dev eth0
  for i in $(seq 1 "$NODES"); do
    wire "n$i" eth0 "n$i-node" br-node
    ip -n "$P-n$i" addr add "$(node_ip "$i")/24" dev eth0
    wire "n$i" eth1 "n$i-pod" br-pod
    ip -n "$P-n$i" addr add "$(node_pod_ip "$i")/24" dev eth1
    ns "n$i" sysctl -qw net.ipv4.ip_forward=1
    # kube-proxy style: KUBE-like chain hooked from PREROUTING; node-fail unhooks it
    ns "n$i" iptables -t nat -N KFE-NODEPORTS
    ns "n$i" iptables -t nat -A PREROUTING -i eth0 -j KFE-NODEPORTS
    ns "n$i" iptables -t nat -A POSTROUTING -o eth1 -j MASQUERADE
  done
}

net_down() {
  local n
  for n in $(ip netns list | awk -v p="$P-" 'index($1, p) == 1 {print $1}'); do
    # only the shapes this script creates (sw, client, pod, e<i>, n<k>)
    [[ ${n#"$P-"} =~ ^(sw|client|pod|e[0-9]+|n[0-9]+)$ ]] || continue
    ip netns del "$n" 2>/dev/null || true
  done
  ip link del "$P-root" 2>/dev/null || true   # normally gone with the switch namespace
  # the blackhole is ours only if no other lab still uses this net
  if ! ip -4 -o addr show | awk -v net="$NET." 'index($4, net) == 1 {f=1} END {exit !f}'; then
    ip route del blackhole "$NET.0.0/16" 2>/dev/null || true
  fi
}

# --- NodePorts ---
node_list() {  # "all" | "1,3" -> node indexes, validated
  local k
  if [ "$1" = all ]; then seq 1 "$NODES"; return; fi
  for k in ${1//,/ }; do
    int_in "$k" 1 "$NODES" || die "node '$k': want 1..$NODES"
    echo "$k"
  done
}

nodeport_add() {  # NODES CTRL_NODEPORT PASV_MIN PASV_MAX +OFFSET|NP,NP,.. [POD_IP] [CTRL_PORT]
  [ $# -ge 5 ] || usage
  local nodes cnp=$2 pmin=$3 pmax=$4 map=$5 pod=${6:-$POD_IP} cport=${7:-21} k j np chain nps
  nodes=$(node_list "$1")  # an assignment, so that a bad node list stops the script
  for v in "$cnp" "$pmin" "$pmax" "$cport"; do int_in "$v" 1 65535 || die "port '$v': want 1..65535"; done
  [ "$pmin" -le "$pmax" ] || die "passive range $pmin-$pmax is empty"
  [[ $pod =~ ^[0-9]+(\.[0-9]+){3}$ ]] || die "pod address '$pod': want IPv4"
  chain=KFE-SVC-$cnp
  if [[ $map =~ ^\+[0-9]+$ ]]; then
    int_in "$((pmax + ${map#+}))" 1 65535 || die "offset $map leaves the port range"
  else
    [[ $map =~ ^[0-9]+(,[0-9]+)*$ ]] || die "passive map '$map': want +OFFSET or NP,NP,.."
    IFS=, read -ra nps <<<"$map"
    [ "${#nps[@]}" -eq $((pmax - pmin + 1)) ] || die "passive map has ${#nps[@]} ports for a range of $((pmax - pmin + 1))"
    for np in "${nps[@]}"; do int_in "$np" 1 65535 || die "nodePort '$np': want 1..65535"; done
  fi
  for k in $nodes; do
    if ns "n$k" iptables -t nat -n -L "$chain" >/dev/null 2>&1; then
      ns "n$k" iptables -t nat -F "$chain"
    else
      ns "n$k" iptables -t nat -N "$chain"
      ns "n$k" iptables -t nat -A KFE-NODEPORTS -j "$chain"
    fi
    ns "n$k" iptables -t nat -A "$chain" -p tcp --dport "$cnp" -j DNAT --to-destination "$pod:$cport"
    if [[ $map =~ ^\+ ]]; then
      # order-preserving NodePorts: one port-shifting DNAT for the whole range
      ns "n$k" iptables -t nat -A "$chain" -p tcp --dport "$((pmin + ${map#+})):$((pmax + ${map#+}))" \
        -j DNAT --to-destination "$pod:$pmin-$pmax/$((pmin + ${map#+}))"
    else
      for j in "${!nps[@]}"; do
        ns "n$k" iptables -t nat -A "$chain" -p tcp --dport "${nps[$j]}" -j DNAT --to-destination "$pod:$((pmin + j))"
      done
    fi
  done
}

nodeport_del() {  # NODES CTRL_NODEPORT
  [ $# -eq 2 ] || usage
  local k nodes chain=KFE-SVC-$2
  nodes=$(node_list "$1")
  for k in $nodes; do
    ns "n$k" iptables -t nat -D KFE-NODEPORTS -j "$chain" 2>/dev/null || true
    ns "n$k" iptables -t nat -F "$chain" 2>/dev/null || true
    ns "n$k" iptables -t nat -X "$chain" 2>/dev/null || true
  done
}

node_hooked() { ns "n$1" iptables -t nat -C PREROUTING -i eth0 -j KFE-NODEPORTS 2>/dev/null; }
node_fail() {  # the node's NodePorts vanish: connections to them get a RST
  int_in "$1" 1 "$NODES" || die "node '$1': want 1..$NODES"
  while node_hooked "$1"; do ns "n$1" iptables -t nat -D PREROUTING -i eth0 -j KFE-NODEPORTS; done
}
node_restore() {
  int_in "$1" 1 "$NODES" || die "node '$1': want 1..$NODES"
  node_hooked "$1" || ns "n$1" iptables -t nat -I PREROUTING 1 -i eth0 -j KFE-NODEPORTS
}

# kube-proxy's health check NodePort of an externalTrafficPolicy=Local Service: HTTP /healthz
# answering 200 while the node has a local endpoint, 503 otherwise.
healthz() {  # K PORT ok|fail|off
  [ $# -eq 3 ] || usage
  local k=$1 port=$2 state=$3 code name
  int_in "$k" 1 "$NODES" || die "node '$k': want 1..$NODES"
  int_in "$port" 1 65535 || die "port '$port': want 1..65535"
  name=healthz-n$k-$port
  stop_pidfile "$RUN/$name.pid" socat
  case "$state" in
    ok)   code=200 ;;
    fail) code=503 ;;
    off)  return 0 ;;
    *)    die "healthz state '$state': want ok, fail or off" ;;
  esac
  # reads the request head before answering: closing on unread data would send a RST
  cat >"$RUN/healthz.sh" <<'EOF'
cr=$(printf '\r')
while IFS= read -r l; do
  case "$l" in "" | "$cr") break ;; esac
done
case "$1" in 200) text=OK ;; *) text="Service Unavailable" ;; esac
printf 'HTTP/1.0 %s %s\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}' "$1" "$text"
EOF
  start_daemon "$name" "n$k" socat socat -T 5 "TCP-LISTEN:$port,bind=$(node_ip "$k"),reuseaddr,fork" \
    "EXEC:/bin/sh $RUN/healthz.sh $code"
  wait_listening "n$k" "$(node_ip "$k")" "$port" "healthz of n$k"
}

# --- services ---
gen_keys() {
  local i
  mkdir -p "$SSHDIR"
  chmod 700 "$DIR" "$SSHDIR"
  [ -f "$SSHDIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "kubeftp-lab-$P" -f "$SSHDIR/id_ed25519"
  cp "$SSHDIR/id_ed25519.pub" "$SSHDIR/authorized_keys"
  chmod 600 "$SSHDIR/authorized_keys"
  : >"$SSHDIR/known_hosts.tmp"
  for i in $(seq 1 "$EDGES"); do
    mkdir -p "$(edge_dir "$i")"
    [ -f "$(edge_dir "$i")/ssh_host_ed25519_key" ] ||
      ssh-keygen -q -t ed25519 -N '' -C "e$i.$P.lab" -f "$(edge_dir "$i")/ssh_host_ed25519_key"
    # pinned from the key file itself: no trust on first use
    echo "$(edge_ip "$i") $(cut -d' ' -f1,2 "$(edge_dir "$i")/ssh_host_ed25519_key.pub")" >>"$SSHDIR/known_hosts.tmp"
  done
  mv "$SSHDIR/known_hosts.tmp" "$SSHDIR/known_hosts"
}

sshd_conf() {  # edge index
  local d
  d=$(edge_dir "$1")
  cat >"$d/sshd_config" <<EOF
# sshd of lab edge host e$1: key authentication only, root only (Ansible's user here)
ListenAddress $(edge_ip "$1"):22
HostKey $d/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $SSHDIR/authorized_keys
AllowUsers root
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the run dir lives under /tmp (sticky, world-writable), which StrictModes refuses
StrictModes no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
MaxStartups 50:30:100
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

edge_sshd_start() {
  local i=$1
  alive "$RUN/sshd-e$i.pid" sshd && return 0
  mkdir -p /run/sshd
  chmod 755 /run/sshd
  sshd_conf "$i"
  /usr/sbin/sshd -t -f "$(edge_dir "$i")/sshd_config" || die "sshd config of e$i rejected"
  start_daemon "sshd-e$i" "e$i" sshd /usr/sbin/sshd -D -e -f "$(edge_dir "$i")/sshd_config"
  wait_listening "e$i" "$(edge_ip "$i")" 22 "sshd of e$i"
}
edge_sshd_stop() { stop_pidfile "$RUN/sshd-e$1.pid" sshd; }

haproxy_seed_cfg() {  # edge index: accepted by HAProxy before the first playbook run
  local d
  d=$(edge_dir "$1")
  cat >"$d/haproxy.cfg" <<EOF
# Seed config of lab edge e$1; the haproxy-ftp role replaces this file.
global
    maxconn 4000
    stats socket $d/stats.sock mode 600 level admin
    stats timeout 30s

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
EOF
  chmod 644 "$d/haproxy.cfg"
}

haproxy_start() {
  local i=$1 d
  d=$(edge_dir "$i")
  alive "$d/haproxy.pid" haproxy && return 0
  [ -f "$d/haproxy.cfg" ] || haproxy_seed_cfg "$i"
  haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy.cfg of e$i is rejected by haproxy -c"
  rm -f "$d/master.sock"
  # master-worker, daemonised; the master CLI socket is how the role reloads without systemd
  ns "e$i" haproxy -W -D -p "$d/haproxy.pid" -S "$d/master.sock,mode,600" -f "$d/haproxy.cfg" \
    </dev/null >>"$LOG/haproxy-e$i.log" 2>&1 || die "haproxy of e$i did not start; see $LOG/haproxy-e$i.log"
  local _
  for _ in $(seq 100); do
    [ -S "$d/master.sock" ] && [ -n "$(workers "$i")" ] && return 0
    sleep 0.05
  done
  die "haproxy of e$i has no worker; see $LOG/haproxy-e$i.log"
}
haproxy_stop() { stop_pidfile "$(edge_dir "$1")/haproxy.pid" haproxy; rm -f "$(edge_dir "$1")/master.sock" "$(edge_dir "$1")/stats.sock"; }

master_cli() { echo "$2" | socat -t 5 stdio "unix-connect:$(edge_dir "$1")/master.sock" 2>/dev/null; }
stats_cli()  { echo "$2" | socat -t 5 stdio "unix-connect:$(edge_dir "$1")/stats.sock" 2>/dev/null; }
# both print nothing while the master re-executes itself during a reload
workers()    { { master_cli "$1" "show proc" || true; } | awk '$2 == "worker" {print $1}'; }
failed()     { { master_cli "$1" "show proc" || true; } | sed -n 's/.*master.*\[failed: \([0-9]*\)\].*/\1/p'; }

haproxy_reload() {  # 2.6's master "reload" answers nothing: wait for a new worker or a failure
  local i=$1 f0 w0 f p _
  f0=$(failed "$i")
  [ -n "$f0" ] || die "no HAProxy master on e$i"
  w0=" $(workers "$i" | tr '\n' ' ') "
  master_cli "$i" reload >/dev/null || true
  for _ in $(seq 200); do
    sleep 0.05
    f=$(failed "$i")
    [ -n "$f" ] || continue  # the master is re-executing itself
    [ "$f" -gt "$f0" ] && die "reload of e$i failed; the old worker keeps running (see $LOG/haproxy-e$i.log)"
    for p in $(master_cli "$i" "show proc" | awk '$2 == "worker" && $3 == "0" {print $1}'); do
      case "$w0" in *" $p "*) ;; *) echo "e$i reloaded: new worker $p"; return 0 ;; esac
    done
  done
  die "reload of e$i: no new worker after 10s"
}

vsftpd_conf() {
  mkdir -p "$DIR/ftproot/pub" /var/run/vsftpd/empty
  getent passwd ftp >/dev/null || die "user 'ftp' missing (the Debian vsftpd package creates it)"
  chown root:root "$DIR/ftproot"
  chmod 755 "$DIR/ftproot"  # vsftpd refuses a writable chroot
  # -R: files an earlier run left behind may belong to another uid (the ftp user is
  # re-created when vsftpd is reinstalled) and would refuse the overwrite (553)
  chown -R ftp:ftp "$DIR/ftproot/pub"
  chmod 755 "$DIR/ftproot/pub"
  [ -f "$DIR/ftps.pem" ] || openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=ftp.$P.lab" \
    -keyout "$DIR/ftps.key" -out "$DIR/ftps.pem" 2>/dev/null
  chmod 600 "$DIR/ftps.key"
  cat >"$DIR/vsftpd.conf" <<EOF
# The lab's FTP "pod": anonymous, uploads allowed, passive only, explicit FTPS offered not forced.
listen=YES
listen_address=$POD_IP
listen_ipv6=NO
background=NO
seccomp_sandbox=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=$DIR/ftproot
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
local_enable=NO
pasv_enable=YES
pasv_min_port=$PASV_MIN
pasv_max_port=$PASV_MAX
pasv_address=$(edge_ip 1)
connect_from_port_20=NO
port_enable=NO
xferlog_enable=YES
vsftpd_log_file=$LOG/vsftpd-xfer.log
# every command and reply with its session's [pid N] and the client address (the node that
# forwarded it): a failed transfer can be traced to its node
log_ftp_protocol=YES
secure_chroot_dir=/var/run/vsftpd/empty
max_per_ip=0
idle_session_timeout=900
data_connection_timeout=120
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=NO
force_anon_data_ssl=NO
require_ssl_reuse=NO
ssl_ciphers=HIGH
rsa_cert_file=$DIR/ftps.pem
rsa_private_key_file=$DIR/ftps.key
EOF
}

vsftpd_start() {
  alive "$RUN/vsftpd.pid" vsftpd && return 0
  vsftpd_conf
  start_daemon vsftpd pod vsftpd /usr/sbin/vsftpd "$DIR/vsftpd.conf"
  wait_listening pod "$POD_IP" 21 vsftpd
}

# Like a pod rolled out with another passive range: its sessions end, the new one listens.
vsftpd_restart() {  # MIN MAX
  [ $# -eq 2 ] || usage
  int_in "$1" 1 65535 && int_in "$2" "$1" 65535 || die "passive range '$1-$2': want MIN-MAX ports"
  int_in "$(($2 + PASV_OFFSET))" 1 65535 || die "passive offset $PASV_OFFSET leaves the port range"
  PASV_MIN=$1 PASV_MAX=$2
  write_env
  stop_pidfile "$RUN/vsftpd.pid" vsftpd
  vsftpd_start
}

write_inventory() {
  local i
  {
    echo "# Inventory of the kubeftp-edge lab '$P', written by lab.sh up."
    echo "all:"
    echo "  children:"
    echo "    edge:"
    echo "      hosts:"
    for i in $(seq 1 "$EDGES"); do
      cat <<EOF
        e$i:
          ansible_host: $(edge_ip "$i")
          haproxy_ftp_config_path: $(edge_dir "$i")/haproxy.cfg
          haproxy_ftp_master_socket: $(edge_dir "$i")/master.sock
          haproxy_ftp_stats_socket: $(edge_dir "$i")/stats.sock
EOF
    done
    cat <<EOF
      vars:
        ansible_user: root
        ansible_ssh_private_key_file: $SSHDIR/id_ed25519
        ansible_ssh_common_args: >-
          -o UserKnownHostsFile=$SSHDIR/known_hosts -o GlobalKnownHostsFile=/dev/null
          -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o ConnectTimeout=5
        ansible_control_path_dir: $DIR/cp
        ansible_python_interpreter: /usr/bin/python3
        haproxy_ftp_reload_method: master-socket
EOF
  } >"$DIR/inventory.yml"
}

write_env() {
  cat >"$DIR/lab.env" <<EOF
L_NET=$NET
L_NODES=$NODES
L_EDGES=$EDGES
L_CLIENTS=$CLIENTS
L_CTRL_NODEPORT=$CTRL_NODEPORT
L_PASV_MIN=$PASV_MIN
L_PASV_MAX=$PASV_MAX
L_PASV_OFFSET=$PASV_OFFSET
EOF
}

print_env() {
  local i
  cat <<EOF
LAB_PREFIX=$P
LAB_NET=$NET
LAB_NODES=$NODES
LAB_EDGES=$EDGES
LAB_CLIENTS=$CLIENTS
LAB_DIR=$DIR
LAB_CTRL_NODEPORT=$CTRL_NODEPORT
LAB_PASV_MIN=$PASV_MIN
LAB_PASV_MAX=$PASV_MAX
LAB_PASV_OFFSET=$PASV_OFFSET
LAB_POD_IP=$POD_IP
LAB_ROOT_IP=$ROOT_IP
LAB_INVENTORY=$DIR/inventory.yml
LAB_SSH_KEY=$SSHDIR/id_ed25519
LAB_KNOWN_HOSTS=$SSHDIR/known_hosts
LAB_CLIENT_IPS="$(for i in $(seq 1 "$CLIENTS"); do client_ip "$i"; done | tr '\n' ' ' | sed 's/ $//')"
LAB_NODE_IPS="$(for i in $(seq 1 "$NODES"); do node_ip "$i"; done | tr '\n' ' ' | sed 's/ $//')"
LAB_EDGE_IPS="$(for i in $(seq 1 "$EDGES"); do edge_ip "$i"; done | tr '\n' ' ' | sed 's/ $//')"
EOF
}

healthy() {  # every namespace, daemon and socket of the lab is there
  local n i
  [ -f "$DIR/lab.env" ] && [ -f "$DIR/inventory.yml" ] || return 1
  for n in $(all_ns); do has_ns "$n" || return 1; done
  alive "$RUN/vsftpd.pid" vsftpd || return 1
  for i in $(seq 1 "$EDGES"); do
    alive "$RUN/sshd-e$i.pid" sshd && alive "$(edge_dir "$i")/haproxy.pid" haproxy || return 1
  done
  ip -o route show | grep -q "^blackhole $NET\.0\.0/16" || return 1
}

up() {
  local i
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
  if healthy; then echo "lab $P already up ($DIR)"; return 0; fi
  # half up (or never up): start clean, and never leave a half-built lab behind
  down >/dev/null
  trap 'rc=$?; trap - EXIT INT TERM; echo "lab.sh: up failed, tearing down" >&2; down >/dev/null 2>&1; exit $rc' EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$DIR" "$RUN" "$LOG" "$DIR/cp"
  write_env
  net_up
  nodeport_add all "$CTRL_NODEPORT" "$PASV_MIN" "$PASV_MAX" "+$PASV_OFFSET"
  gen_keys
  vsftpd_start
  for i in $(seq 1 "$EDGES"); do
    edge_sshd_start "$i"
    haproxy_seed_cfg "$i"  # a new lab starts from the seed, whatever an earlier one left
    haproxy_start "$i"
  done
  write_inventory
  trap - EXIT INT TERM
  echo "lab $P up: $NODES node(s), $EDGES edge(s), run dir $DIR, inventory $DIR/inventory.yml"
}

down() {
  local s i
  # ssh ControlPersist masters that Ansible left (the inventory points control_path_dir here)
  for s in "$DIR"/cp/*; do
    [ -S "$s" ] || continue
    ssh -o ControlPath="$s" -O exit lab-edge >/dev/null 2>&1 || true
    rm -f "$s"
  done
  # every edge an earlier up may have made, whatever LAB_EDGES says now
  for i in $(seq 1 40); do
    [ -d "$(edge_dir "$i")" ] || continue
    haproxy_stop "$i"   # SIGTERM to the master stops every worker, old ones too
    edge_sshd_stop "$i"
  done
  stop_pidfile "$RUN/vsftpd.pid" vsftpd
  for s in "$RUN"/healthz-*.pid; do
    [ -f "$s" ] && stop_pidfile "$s" socat
  done
  net_down
  echo "lab $P down"
}

status() {
  local n i rc=0 state
  echo "lab $P: net $NET.0.0/16, $NODES node(s), $EDGES edge(s), run dir $DIR"
  for n in $(all_ns); do
    if has_ns "$n"; then echo "  netns $P-$n: pids $(ip netns pids "$P-$n" | tr '\n' ' ')"; else echo "  netns $P-$n: MISSING"; rc=1; fi
  done
  if alive "$RUN/vsftpd.pid" vsftpd; then echo "  vsftpd: pid $(cat "$RUN/vsftpd.pid")"; else echo "  vsftpd: DOWN"; rc=1; fi
  for i in $(seq 1 "$EDGES"); do
    if alive "$RUN/sshd-e$i.pid" sshd; then echo "  e$i sshd: pid $(cat "$RUN/sshd-e$i.pid")"; else echo "  e$i sshd: DOWN"; rc=1; fi
    if alive "$(edge_dir "$i")/haproxy.pid" haproxy; then
      echo "  e$i haproxy: master $(cat "$(edge_dir "$i")/haproxy.pid"), workers $(workers "$i" | tr '\n' ' ')"
    else echo "  e$i haproxy: DOWN"; rc=1; fi
  done
  for i in $(seq 1 "$NODES"); do
    has_ns "n$i" || continue
    state=up
    node_hooked "$i" || state="FAILED (NodePorts unhooked)"
    [ "$(ip -n "$P-n$i" -o link show eth0 | grep -c 'state UP')" = 1 ] || state="$state, LINK DOWN"
    echo "  n$i $(node_ip "$i"): $state; services: $(ns "n$i" iptables -t nat -S KFE-NODEPORTS 2>/dev/null | awk '$1 == "-A" {print $4}' | tr '\n' ' ')"
  done
  if ip -o route show | grep -q "^blackhole $NET\.0\.0/16"; then echo "  blackhole $NET.0.0/16: present"; else echo "  blackhole $NET.0.0/16: MISSING"; rc=1; fi
  return $rc
}

smoke() {  # real passive FTP through edge $1: 1 MB STOR, RETR via curl EPSV, PASV and lftp
  local i=${1:-1} f="$DIR/smoke.bin" d="$DIR/smoke.dl" want host
  host=$(edge_ip "$i")
  head -c 1048576 /dev/urandom >"$f"
  want=$(sha256sum <"$f")
  ns client curl -sS --max-time 20 -T "$f" "ftp://$host/pub/smoke.bin"
  rm -f "$d"; ns client curl -sS --max-time 20 -o "$d" "ftp://$host/pub/smoke.bin"
  [ "$(sha256sum <"$d")" = "$want" ] || die "smoke: EPSV download differs"
  rm -f "$d"; ns client curl -sS --max-time 20 --disable-epsv -o "$d" "ftp://$host/pub/smoke.bin"
  [ "$(sha256sum <"$d")" = "$want" ] || die "smoke: PASV download differs"
  rm -f "$d"; ns client lftp -u anonymous, -e "set net:max-retries 1; set net:timeout 10; set ftp:ssl-allow no; get pub/smoke.bin -o $d; bye" "$host"
  [ "$(sha256sum <"$d")" = "$want" ] || die "smoke: lftp download differs"
  rm -f "$d" "$f"
  echo "smoke OK through e$i ($host): 1 MB up, down via curl EPSV, curl PASV, lftp; sha256 equal"
}

edge_index() { int_in "${1:-}" 1 "$EDGES" || die "edge '${1:-}': want 1..$EDGES"; }

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case "$cmd" in
  up)             up ;;
  down)           down ;;
  status)         status ;;
  env)            print_env ;;
  smoke)          smoke "${1:-1}" ;;
  node-fail)      node_fail "${1:-}" ;;
  node-restore)   node_restore "${1:-}" ;;
  node-linkdown)  int_in "${1:-}" 1 "$NODES" || die "node: want 1..$NODES"; ip -n "$P-n$1" link set eth0 down ;;
  node-linkup)    int_in "${1:-}" 1 "$NODES" || die "node: want 1..$NODES"; ip -n "$P-n$1" link set eth0 up ;;
  nodeport-add)   nodeport_add "$@" ;;
  nodeport-del)   nodeport_del "$@" ;;
  healthz)        healthz "$@" ;;
  nodeport-list)  int_in "${1:-}" 1 "$NODES" || die "node: want 1..$NODES"; ns "n$1" iptables -t nat -S ;;
  edge-sshd)
    edge_index "${2:-}"
    case "${1:-}" in start) edge_sshd_start "$2" ;; stop) edge_sshd_stop "$2" ;; *) usage ;; esac ;;
  vsftpd-restart) vsftpd_restart "$@" ;;
  haproxy-start)  edge_index "${1:-}"; haproxy_start "$1" ;;
  haproxy-stop)   edge_index "${1:-}"; haproxy_stop "$1" ;;
  haproxy-reload) edge_index "${1:-}"; haproxy_reload "$1" ;;
  master-cli)     edge_index "${1:-}"; master_cli "$1" "${2:?command}" ;;
  stats-cli)      edge_index "${1:-}"; stats_cli "$1" "${2:?command}" ;;
  exec)
    n=${1:-}
    [[ $n =~ ^(sw|client|pod|e[0-9]+|n[0-9]+)$ ]] && has_ns "$n" || die "namespace '$n' is not part of lab $P"
    shift
    exec ip netns exec "$P-$n" "$@" ;;
  *) usage ;;
esac
