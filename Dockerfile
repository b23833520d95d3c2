# ipprotd in a container: a static binary, run as a non-root user, with the
# recordings folder as a volume.
#
#   docker build -t ipprotd .
#   docker run -p 5432:5432 -v ipprot-rec:/var/lib/ipprot ipprotd \
#       -p 5432 -P 5432@db.internal -L -f /var/lib/ipprot/prot -z -c /var/lib/ipprot/connections.log
#
# tini is PID 1 so that children of post-processing commands that outlive
# them are reaped. See docs/deploy.md.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version number is in version.go; .git is not copied, so the commit
# comes from the build: docker build --build-arg COMMIT=$(git rev-parse --short=12 HEAD) .
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.commit=${COMMIT}" -o /out/ipprotd .

# A small Debian rather than scratch: post-processing commands (-u) need a
# /bin/sh, and usually gzip, bzip2 or curl.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates curl bzip2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ipprot \
 && useradd --system --uid 10001 --gid ipprot --home-dir /var/lib/ipprot --shell /usr/sbin/nologin ipprot \
 && install -d -o ipprot -g ipprot -m 0750 /var/lib/ipprot
COPY --from=build /out/ipprotd /usr/local/bin/ipprotd
USER ipprot:ipprot
WORKDIR /var/lib/ipprot
VOLUME ["/var/lib/ipprot"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/ipprotd"]
# Without arguments: listen on 8080, forward to port 80 of the host named
# "upstream" (a linked container), record both directions.
CMD ["-p", "8080", "-P", "80@upstream", "-L", "-f", "/var/lib/ipprot/prot", "-c", "/var/lib/ipprot/connections.log"]
