#!/usr/bin/env bash
# Builds the Kafka image without any image registry (`make kafka-image`):
#
#   1. the broker's jars: pipeline.localkafka assembles them from Maven Central (once);
#   2. a base image, Debian bookworm (minbase) with OpenJDK 17's headless JRE, made by
#      debootstrap from Debian's packages and `docker import`; cached under a tag named by its
#      recipe, so it is made once per machine (about 1.5 minutes);
#   3. the Kafka layer: the jars, the KRaft start script (run) and the readiness check (ready).
#
# Cached: the image is rebuilt only when its content hash (the base tag, this directory's files
# and every jar's sha256) differs from the label on the existing image. Every step is bounded
# by a timeout and fails with one `kafka-image:` line saying what to do. Prints the image's
# name on stdout, and nothing else.
#
#   bash docker/kafka/build.sh                  # PY=.venv/bin/python, KAFKA_IMAGE=kafka-pipeline/kafka:<version>
#   DEBOOTSTRAP_MIRROR=http://... bash docker/kafka/build.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PY:-.venv/bin/python}"

say() { echo "kafka-image: $*" >&2; }
die() { say "error: $*"; exit 1; }

command -v docker >/dev/null || die "no docker client on PATH (Debian: apt-get install docker.io)"
timeout 20 docker info >/dev/null 2>&1 \
    || die "no Docker engine answers (start one: bash .ci/docker.sh, as root)"

VERSION="$("$PY" -c 'from pipeline.localkafka.layout import kafka_version; print(kafka_version())')"
IMAGE="${KAFKA_IMAGE:-kafka-pipeline/kafka:$VERSION}"

LOCK="${TMPDIR:-/tmp}/kafka-pipeline-image.lock"
exec 9>"$LOCK"
timeout 5 flock 9 2>/dev/null || { say "waiting for another build (lock $LOCK)"; flock -w 1200 9 || die "lock $LOCK held for 20 minutes"; }

# 1. The jars (downloads only on the first run; progress goes to stderr).
LIBS="$(timeout 900 "$PY" -m pipeline.localkafka libs)" || die "could not assemble the Kafka $VERSION jars"

# 2. The base image.
RECIPE="debootstrap --variant=minbase --include=openjdk-17-jre-headless bookworm"
BASE="kafka-pipeline/jre17-bookworm:$(echo "$RECIPE" | sha256sum | cut -c1-12)"
if docker image inspect "$BASE" >/dev/null 2>&1; then
    say "base image $BASE is present"
else
    command -v debootstrap >/dev/null || die "debootstrap is needed once for the base image (apt-get install debootstrap)"
    [[ $EUID -eq 0 ]] || die "debootstrap needs root to make the base image"
    WORK="$(mktemp -d /var/tmp/kafka-image.XXXXXX)"
    trap 'rm -rf "$WORK"' EXIT
    say "making $BASE: $RECIPE (about 1.5 minutes; log: $WORK/debootstrap.log)"
    # shellcheck disable=SC2086  # the recipe is words; the mirror is optional (debootstrap's default)
    if ! timeout 900 $RECIPE "$WORK/root" ${DEBOOTSTRAP_MIRROR:-} >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log" >&2
        die "debootstrap failed (above); is Debian's package mirror reachable? DEBOOTSTRAP_MIRROR picks another"
    fi
    [[ -x "$WORK/root/usr/bin/java" ]] || die "debootstrap finished but the root filesystem has no /usr/bin/java"
    timeout 600 tar -C "$WORK/root" --numeric-owner \
        --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' \
        --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . \
        | timeout 600 docker import --change 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null \
        || die "docker import of the root filesystem failed"
    rm -rf "$WORK"
    trap - EXIT
fi

# 3. The Kafka layer, unless an image with the same content is there.
HASH="$( { echo "$BASE"; cd "$HERE" && sha256sum Dockerfile run ready log4j2.xml; cd "$LIBS" && sha256sum ./*.jar; } \
    | sha256sum | cut -c1-16)"
HAVE="$(docker image inspect -f '{{index .Config.Labels "org.kafka-pipeline.content-hash"}}' "$IMAGE" 2>/dev/null || true)"
if [[ "$HAVE" == "$HASH" ]]; then
    say "$IMAGE is up to date (content $HASH)"
    echo "$IMAGE"
    exit 0
fi
CTX="$(mktemp -d "${TMPDIR:-/tmp}/kafka-image-ctx.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
cp "$HERE"/{Dockerfile,run,ready,log4j2.xml} "$CTX/"
mkdir "$CTX/libs" && cp "$LIBS"/*.jar "$CTX/libs/"
say "building $IMAGE (Kafka $VERSION, content $HASH)"
# The classic builder: Debian's engine has no BuildKit client plugin to pair with.
DOCKER_BUILDKIT=0 timeout 600 docker build -q \
    --build-arg "BASE=$BASE" --build-arg "KAFKA_VERSION=$VERSION" --build-arg "CONTENT_HASH=$HASH" \
    -t "$IMAGE" "$CTX" >/dev/null || die "docker build of $IMAGE failed"
say "built $IMAGE"
echo "$IMAGE"
