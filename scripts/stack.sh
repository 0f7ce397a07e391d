#!/usr/bin/env bash
# xclog's local service stack, run natively (Docker not needed): Kafka (KRaft), PostgreSQL, FerretDB.
#
#   scripts/stack.sh up                 install what is missing, start all three, wait until each answers
#   scripts/stack.sh down               stop all three
#   scripts/stack.sh status             what runs where (exit 1 if any service is not healthy)
#   scripts/stack.sh env                print `export XCLOG_KAFKA_BROKERS=... DATABASE_URL=... MONGODB_URI=...`
#                                       and the SASL_SSL listener's XCLOG_KAFKA_SECURE_* settings
#   scripts/stack.sh start|stop|restart kafka|postgres|ferretdb    one service (fault tests use these)
#   scripts/stack.sh kafka-stop | kafka-start | pg-restart | ferretdb-restart   short forms of the above
#   scripts/stack.sh logs [SERVICE]     tail the logs
#
# Everything lives under $XCLOG_HOME (default /var/tmp/xclog):
#   cache/   downloaded and built software (Kafka jars, the FerretDB binary): kept between runs
#   run/<service>/   data, pid file and log (run/<service>/<service>.log) of each service
# Everything listens on 127.0.0.1. Ports: XCLOG_KAFKA_PORT (9092; controller on +1, SASL_SSL
# listener on +2), XCLOG_PG_PORT (5432), XCLOG_MONGO_PORT (27017).
# Kafka's SASL_SSL listener uses a throwaway CA, broker certificate and SCRAM-SHA-512 user made
# once under run/kafka/tls/ (test-only credentials; `env` prints them). The broker authorizes
# with ACLs: everything is allowed (PLAINTEXT clients are super users, resources without ACLs
# are open) except Write on topics named xclog-write-denied-* for the SCRAM user, which
# is how tests see a broker refuse a write for lack of rights.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
XCLOG_HOME=${XCLOG_HOME:-/var/tmp/xclog}
CACHE=$XCLOG_HOME/cache
RUN=$XCLOG_HOME/run

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$SCRIPT_DIR/kafka/pom.xml")
FERRETDB_VERSION=$(sed -n 's:^require github.com/FerretDB/FerretDB \(v[0-9.]*\)$:\1:p' "$SCRIPT_DIR/ferretdb/go.mod")
KAFKA_PORT=${XCLOG_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
KAFKA_SECURE_PORT=$((KAFKA_PORT + 2))
KAFKA_TLS=$RUN/kafka/tls
KAFKA_SCRAM_USER=xclog
KAFKA_WRITE_DENIED_PREFIX=xclog-write-denied-
PG_PORT=${XCLOG_PG_PORT:-5432}
MONGO_PORT=${XCLOG_MONGO_PORT:-27017}
PG_USER=xclog
PG_PASSWORD=xclog
PG_DB=xclog

KAFKA_LIBS=$CACHE/kafka-$KAFKA_VERSION/libs
FERRETDB_BIN=$CACHE/bin/xclog-ferretdb-$FERRETDB_VERSION

say() { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }

# fail STEP SERVICE MESSAGE: says which step failed, shows the service's log tail, exits 1.
fail() {
    local step=$1 service=$2
    shift 2
    printf '\033[31m[stack] step "%s" failed:\033[0m %s\n' "$step" "$*" >&2
    local log=$RUN/$service/$service.log
    if [[ -n $service && -s $log ]]; then
        echo "--- last 30 lines of $log ---" >&2
        tail -n 30 "$log" >&2
        echo "---" >&2
    fi
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

apt_install() {
    is_root || fail "install $*" "" "needs root to apt-get install $*; install it yourself and rerun"
    if [[ ! -f $RUN/.apt-updated ]]; then
        mkdir -p "$RUN"
        timeout 300 apt-get update -qq >&2 || fail "apt-get update" "" "cannot reach Debian's package mirror"
        touch "$RUN/.apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || fail "apt-get install $*" "" "apt-get install failed"
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(head -1 "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Who holds a TCP port (for the "port taken" error).
port_owner() { ss -ltnp 2>/dev/null | awk -v p=":$1" '$4 ~ p"$" {print $6}' | head -1; }

wait_for() { # wait_for SECONDS SERVICE DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) service=$2 what=$3
    shift 3
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            fail "wait for $what" "$service" "$service did not answer within the deadline"
        fi
        if [[ -f $RUN/$service/$service.pid ]] && ! pid_alive "$RUN/$service/$service.pid"; then
            fail "wait for $what" "$service" "$service exited during start-up"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------- prerequisites

need_java() {
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    local major
    major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/.*java.specification.version = \([0-9]*\).*/\1/p')
    [[ ${major:-0} -ge 17 ]] || fail "check java" "" "Kafka $KAFKA_VERSION needs Java 17 or newer, found ${major:-none}"
}

install_kafka() {
    [[ -f $KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar && -f $KAFKA_LIBS/.complete ]] && return 0
    need_java
    command -v mvn >/dev/null || apt_install maven
    say "installing Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
    mkdir -p "$KAFKA_LIBS"
    timeout 900 mvn -q -B -f "$SCRIPT_DIR/kafka/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime >&2 \
        || fail "resolve Kafka jars with mvn" "" "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
    touch "$KAFKA_LIBS/.complete"
}

pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/postgres && -x $d/initdb ]] && { echo "$d"; return 0; }
    done
    return 1
}

install_postgres() {
    pg_bindir >/dev/null && command -v psql >/dev/null && return 0
    say "installing PostgreSQL from Debian's packages"
    apt_install postgresql postgresql-client
    pg_bindir >/dev/null || fail "install postgresql" "" "no postgres binary under /usr/lib/postgresql after install"
}

install_ferretdb() {
    [[ -x $FERRETDB_BIN ]] && return 0
    command -v go >/dev/null || fail "install FerretDB" "" "Go is needed to build FerretDB $FERRETDB_VERSION (go install); install Go 1.24+"
    say "building FerretDB $FERRETDB_VERSION from the Go module proxy into $FERRETDB_BIN"
    mkdir -p "$CACHE/bin"
    (cd "$SCRIPT_DIR/ferretdb" && GOFLAGS=-mod=mod timeout 1200 go build -o "$FERRETDB_BIN.tmp" .) >&2 \
        || fail "go build FerretDB" "" "could not build FerretDB $FERRETDB_VERSION from the Go module proxy"
    mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
}

# ---------------------------------------------------------------- PostgreSQL

PGDATA=$RUN/postgres/data

as_pg() { # run a command as the owner of the cluster (postgres refuses to run as root)
    if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_ready() { PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -tAc 'SELECT 1' 2>/dev/null | grep -qx 1; }
pg_super_ready() { as_pg psql -h "$RUN/postgres" -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' 2>/dev/null | grep -qx 1; }

start_postgres() {
    local bin
    bin=$(pg_bindir)
    mkdir -p "$RUN/postgres"
    if is_root; then
        id postgres >/dev/null 2>&1 || fail "start postgres" "" "user postgres missing (reinstall the postgresql package)"
        chown postgres "$RUN/postgres"
        chmod 755 "$XCLOG_HOME" "$RUN"
    fi
    if [[ ! -f $PGDATA/PG_VERSION ]]; then
        say "initialising a PostgreSQL cluster in $PGDATA"
        as_pg "$bin/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
            >"$RUN/postgres/initdb.log" 2>&1 || { cp "$RUN/postgres/initdb.log" "$RUN/postgres/postgres.log"; fail "initdb" postgres "initdb failed"; }
    fi
    if pid_alive "$PGDATA/postmaster.pid" 2>/dev/null && pg_super_ready; then
        say "postgres already running (pid $(head -1 "$PGDATA/postmaster.pid"))"
    else
        if port_open "$PG_PORT"; then
            fail "start postgres" postgres "port $PG_PORT on 127.0.0.1 is taken by $(port_owner "$PG_PORT") (another PostgreSQL? stop it, or set XCLOG_PG_PORT)"
        fi
        say "starting postgres on 127.0.0.1:$PG_PORT"
        as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$RUN/postgres/postgres.log" -w -t 60 start -o \
            "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$RUN/postgres -c max_connections=300 -c shared_buffers=256MB -c max_wal_size=2GB" \
            >/dev/null || fail "start postgres" postgres "pg_ctl start failed"
        head -1 "$PGDATA/postmaster.pid" >"$RUN/postgres/postgres.pid"
    fi
    wait_for 60 postgres "postgres superuser connection" pg_super_ready
    # Role and databases: idempotent.
    as_pg psql -q -h "$RUN/postgres" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL || fail "create role and database" postgres "psql failed"
SELECT 'CREATE ROLE $PG_USER LOGIN SUPERUSER' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') \gexec
ALTER ROLE $PG_USER PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
SELECT 'CREATE DATABASE ferretdb OWNER $PG_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'ferretdb') \gexec
SQL
    # FerretDB 1.x's `_id` lookups need a GIN index its own `_id` index does not give
    # (scripts/ferretdb/id-gin.sql says why); an event trigger adds it to every collection table.
    as_pg psql -q -h "$RUN/postgres" -p "$PG_PORT" -U postgres -d ferretdb -v ON_ERROR_STOP=1 \
        <"$SCRIPT_DIR/ferretdb/id-gin.sql" >/dev/null || fail "install the _id GIN trigger" postgres "psql failed on scripts/ferretdb/id-gin.sql"
    wait_for 30 postgres "SELECT 1 on $PG_DB" pg_ready
}

stop_postgres() {
    local bin
    bin=$(pg_bindir) || return 0
    if [[ -f $PGDATA/postmaster.pid ]]; then
        say "stopping postgres"
        as_pg "$bin/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
    rm -f "$RUN/postgres/postgres.pid"
}

# ---------------------------------------------------------------- Kafka

kafka_ready() { python3 "$SCRIPT_DIR/probe.py" kafka "127.0.0.1:$KAFKA_PORT"; }

kafka_java() { # JVM options, then main class and args
    java -Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$RUN/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*" "$@"
}

# The SASL_SSL listener's material, made once: a CA, a broker certificate for 127.0.0.1 and
# localhost signed by it (in a PKCS12 keystore for the broker), and the SCRAM user's password.
ensure_kafka_tls() {
    [[ -f $KAFKA_TLS/broker.p12 && -f $KAFKA_TLS/scram-password && -f $KAFKA_TLS/keystore-password ]] && return 0
    command -v openssl >/dev/null || apt_install openssl
    say "making a throwaway CA, broker certificate and SCRAM password in $KAFKA_TLS"
    rm -rf "$KAFKA_TLS.tmp"
    mkdir -p "$KAFKA_TLS.tmp"
    (
        cd "$KAFKA_TLS.tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=xclog local stack CA" \
            -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >broker.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile broker.ext -out broker.pem
        openssl rand -hex 16 >keystore-password
        openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
            -passout "file:keystore-password" -out broker.p12
        openssl rand -hex 16 >scram-password
        chmod 600 ca.key broker.key keystore-password scram-password
    ) >"$RUN/kafka/tls.log" 2>&1 || { cat "$RUN/kafka/tls.log" >>"$RUN/kafka/kafka.log"; fail "make Kafka TLS material" kafka "openssl failed"; }
    rm -rf "$KAFKA_TLS"
    mv "$KAFKA_TLS.tmp" "$KAFKA_TLS"
}

# The SCRAM user lives in the cluster's metadata: added once per formatted cluster (the marker
# is named after the cluster id), whether the storage was formatted before the listener existed
# or just now.
ensure_kafka_scram_user() {
    local cluster marker
    cluster=$(sed -n 's/^cluster.id=//p' "$RUN/kafka/data/meta.properties")
    marker=$KAFKA_TLS/scram-user-$cluster
    [[ -f $marker ]] && return 0
    say "adding SCRAM-SHA-512 user $KAFKA_SCRAM_USER to the Kafka cluster"
    java -Xmx256m -Dlog4j2.configurationFile="$RUN/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*" kafka.admin.ConfigCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter --entity-type users --entity-name "$KAFKA_SCRAM_USER" \
        --add-config "SCRAM-SHA-512=[password=$(cat "$KAFKA_TLS/scram-password")]" >>"$RUN/kafka/kafka.log" 2>&1 \
        || fail "add the SCRAM user" kafka "kafka-configs --alter --add-config SCRAM-SHA-512 failed"
    touch "$marker"
}

# The ACLs live in the cluster's metadata too: the SCRAM user may do anything on topics named
# $KAFKA_WRITE_DENIED_PREFIX* (create, describe, read) except write to them.
ensure_kafka_acls() {
    local cluster marker
    cluster=$(sed -n 's/^cluster.id=//p' "$RUN/kafka/data/meta.properties")
    marker=$KAFKA_TLS/write-denied-acls-$cluster
    [[ -f $marker ]] && return 0
    say "denying $KAFKA_SCRAM_USER Write on topics $KAFKA_WRITE_DENIED_PREFIX*"
    local acl=(java -Xmx256m -Dlog4j2.configurationFile="$RUN/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*"
        org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --add
        --topic "$KAFKA_WRITE_DENIED_PREFIX" --resource-pattern-type prefixed)
    { "${acl[@]}" --allow-principal "User:$KAFKA_SCRAM_USER" --operation All \
        && "${acl[@]}" --deny-principal "User:$KAFKA_SCRAM_USER" --operation Write; } >>"$RUN/kafka/kafka.log" 2>&1 \
        || fail "add the write-denied ACLs" kafka "kafka-acls --add failed"
    touch "$marker"
}

# A TLS handshake with the SASL_SSL listener that verifies its certificate against the CA.
kafka_secure_ready() {
    [[ -f $KAFKA_TLS/ca.pem ]] || return 1
    openssl s_client -connect "127.0.0.1:$KAFKA_SECURE_PORT" -CAfile "$KAFKA_TLS/ca.pem" -verify_return_error </dev/null 2>&1 \
        | grep -q 'Verify return code: 0 (ok)'
}

start_kafka() {
    need_java
    local dir=$RUN/kafka
    mkdir -p "$dir/data"
    if pid_alive "$dir/kafka.pid" && kafka_ready >/dev/null 2>&1; then
        say "kafka already running (pid $(cat "$dir/kafka.pid"))"
        if grep -q '^listeners=.*SASL_SSL://' "$dir/server.properties" 2>/dev/null \
            && grep -q '^authorizer.class.name=' "$dir/server.properties" 2>/dev/null; then
            wait_for 30 kafka "TLS handshake on the SASL_SSL listener 127.0.0.1:$KAFKA_SECURE_PORT" kafka_secure_ready
            ensure_kafka_scram_user
            ensure_kafka_acls
            return 0
        fi
        say "kafka runs without the SASL_SSL listener or the ACL authorizer (started by an older stack.sh); restarting it with them"
        stop_pidfile kafka
    fi
    if pid_alive "$dir/kafka.pid"; then
        say "kafka process $(cat "$dir/kafka.pid") exists but does not answer yet; waiting"
        wait_for 90 kafka "Kafka metadata request" kafka_ready
        return 0
    fi
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SECURE_PORT"; do
        port_open "$p" && fail "start kafka" kafka "port $p on 127.0.0.1 is taken by $(port_owner "$p") (set XCLOG_KAFKA_PORT)"
    done
    ensure_kafka_tls
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SECURE_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SECURE_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_TLS/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$KAFKA_TLS/keystore-password")
listener.name.sasl_ssl.ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS
log.dirs=$dir/data
auto.create.topics.enable=false
delete.topic.enable=true
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
EOF
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
    if [[ ! -f $dir/data/meta.properties ]]; then
        say "formatting Kafka storage in $dir/data"
        kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
            -c "$dir/server.properties" >"$dir/kafka.log" 2>&1 || fail "format Kafka storage" kafka "kafka-storage format failed"
    fi
    say "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
    nohup setsid bash -c "$(declare -f kafka_java); RUN='$RUN' KAFKA_LIBS='$KAFKA_LIBS' kafka_java kafka.Kafka '$dir/server.properties'" \
        >>"$dir/kafka.log" 2>&1 </dev/null &
    echo $! >"$dir/kafka.pid"
    wait_for 120 kafka "Kafka metadata request" kafka_ready
    wait_for 30 kafka "TLS handshake on the SASL_SSL listener 127.0.0.1:$KAFKA_SECURE_PORT" kafka_secure_ready
    ensure_kafka_scram_user
    ensure_kafka_acls
}

# Any process of the group led by PID (the service started with setsid), or PID itself, alive.
group_alive() { kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }

stop_pidfile() { # stop_pidfile SERVICE: SIGTERM the process group, wait for all of it, then SIGKILL
    local service=$1 pidfile=$RUN/$1/$1.pid
    pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    local pid
    pid=$(cat "$pidfile")
    say "stopping $service (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    # The pid file holds the group leader (Kafka's is the bash that runs java): wait until the
    # whole group is gone, or a restart finds the ports still held by the exiting JVM.
    local deadline=$((SECONDS + 60))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.3; done
    if group_alive "$pid"; then
        say "$service did not stop in 60 s; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# ---------------------------------------------------------------- FerretDB

ferretdb_ready() { python3 "$SCRIPT_DIR/probe.py" mongo "127.0.0.1:$MONGO_PORT"; }

start_ferretdb() {
    local dir=$RUN/ferretdb
    mkdir -p "$dir"
    if pid_alive "$dir/ferretdb.pid" && ferretdb_ready >/dev/null 2>&1; then
        say "ferretdb already running (pid $(cat "$dir/ferretdb.pid"))"
        return 0
    fi
    pid_alive "$dir/ferretdb.pid" && stop_pidfile ferretdb
    port_open "$MONGO_PORT" && fail "start ferretdb" ferretdb "port $MONGO_PORT on 127.0.0.1 is taken by $(port_owner "$MONGO_PORT") (a MongoDB? set XCLOG_MONGO_PORT)"
    say "starting FerretDB $FERRETDB_VERSION on 127.0.0.1:$MONGO_PORT (PostgreSQL backend, database ferretdb)"
    nohup setsid "$FERRETDB_BIN" -listen-addr "127.0.0.1:$MONGO_PORT" -handler postgresql \
        -postgresql-url "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/ferretdb?pool_max_conns=40" \
        -log-level warn >>"$dir/ferretdb.log" 2>&1 </dev/null &
    echo $! >"$dir/ferretdb.pid"
    wait_for 60 ferretdb "Mongo ping" ferretdb_ready
}

# ---------------------------------------------------------------- commands

print_env() {
    cat <<EOF
export XCLOG_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
export MONGODB_URI=mongodb://127.0.0.1:$MONGO_PORT/
EOF
    # The SASL_SSL listener, with its throwaway test credentials (made by `up`).
    if [[ -f $KAFKA_TLS/scram-password ]]; then
        cat <<EOF
export XCLOG_KAFKA_SECURE_BROKERS=127.0.0.1:$KAFKA_SECURE_PORT
export XCLOG_KAFKA_SECURE_CA_FILE=$KAFKA_TLS/ca.pem
export XCLOG_KAFKA_SECURE_USERNAME=$KAFKA_SCRAM_USER
export XCLOG_KAFKA_SECURE_PASSWORD=$(cat "$KAFKA_TLS/scram-password")
export XCLOG_KAFKA_SECURE_PASSWORD_FILE=$KAFKA_TLS/scram-password
export XCLOG_KAFKA_SECURE_WRITE_DENIED_PREFIX=$KAFKA_WRITE_DENIED_PREFIX
EOF
    fi
}

status() {
    local bad=0
    printf '%-9s %-8s %-22s %s\n' SERVICE STATE ADDRESS DETAIL
    if pid_alive "$RUN/kafka/kafka.pid" && out=$(kafka_ready 2>&1); then
        printf '%-9s %-8s %-22s %s\n' kafka healthy "127.0.0.1:$KAFKA_PORT" "pid $(cat "$RUN/kafka/kafka.pid"), Kafka $KAFKA_VERSION, $out"
        if kafka_secure_ready; then
            printf '%-9s %-8s %-22s %s\n' kafka healthy "127.0.0.1:$KAFKA_SECURE_PORT" "SASL_SSL listener (SCRAM-SHA-512), CA $KAFKA_TLS/ca.pem"
        else
            printf '%-9s %-8s %-22s %s\n' kafka down "127.0.0.1:$KAFKA_SECURE_PORT" "no verified TLS handshake on the SASL_SSL listener (scripts/stack.sh restart kafka)"
            bad=1
        fi
    else
        printf '%-9s %-8s %-22s %s\n' kafka down "127.0.0.1:$KAFKA_PORT" "log: $RUN/kafka/kafka.log"
        bad=1
    fi
    if pg_ready; then
        printf '%-9s %-8s %-22s %s\n' postgres healthy "127.0.0.1:$PG_PORT" "pid $(head -1 "$PGDATA/postmaster.pid" 2>/dev/null), SELECT 1 ok on $PG_DB"
    else
        printf '%-9s %-8s %-22s %s\n' postgres down "127.0.0.1:$PG_PORT" "log: $RUN/postgres/postgres.log"
        bad=1
    fi
    if pid_alive "$RUN/ferretdb/ferretdb.pid" && ferretdb_ready >/dev/null 2>&1; then
        printf '%-9s %-8s %-22s %s\n' ferretdb healthy "127.0.0.1:$MONGO_PORT" "pid $(cat "$RUN/ferretdb/ferretdb.pid"), FerretDB $FERRETDB_VERSION, ping ok"
    else
        printf '%-9s %-8s %-22s %s\n' ferretdb down "127.0.0.1:$MONGO_PORT" "log: $RUN/ferretdb/ferretdb.log"
        bad=1
    fi
    echo "data and logs: $RUN   cache: $CACHE"
    return $bad
}

start_one() {
    case $1 in
        kafka) install_kafka && start_kafka ;;
        postgres) install_postgres && start_postgres ;;
        ferretdb) install_ferretdb && start_ferretdb ;;
        *) echo "unknown service '$1' (kafka, postgres, ferretdb)" >&2; exit 2 ;;
    esac
}

stop_one() {
    case $1 in
        kafka | ferretdb) stop_pidfile "$1" ;;
        postgres) stop_postgres ;;
        *) echo "unknown service '$1' (kafka, postgres, ferretdb)" >&2; exit 2 ;;
    esac
}

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

cmd=${1:-}
case $cmd in
    up)
        mkdir -p "$CACHE" "$RUN"
        install_postgres
        install_kafka
        install_ferretdb
        start_postgres
        start_kafka
        start_ferretdb
        say "all services are up (data and logs in $RUN)"
        ;;
    down)
        stop_pidfile ferretdb
        stop_pidfile kafka
        stop_postgres
        ;;
    status) status ;;
    env) print_env ;;
    start) start_one "${2:?service}" ;;
    stop) stop_one "${2:?service}" ;;
    restart) stop_one "${2:?service}"; start_one "$2" ;;
    kafka-stop) stop_one kafka ;;
    kafka-start) start_one kafka ;;
    pg-restart) stop_one postgres; start_one postgres ;;
    ferretdb-restart) stop_one ferretdb; start_one ferretdb ;;
    logs) tail -n 50 "$RUN/${2:-kafka}/${2:-kafka}.log" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
