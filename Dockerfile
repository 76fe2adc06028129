# syntax=docker/dockerfile:1
#
# Images of the demo stack (docker-compose.yaml), from one build stage:
#
#   docker build -t tokengate .                          # the default: tokengate
#   docker build --target openai-mock -t openai-mock .   # the demo upstream
#
# Both are static Go binaries on distroless/static: no shell, no libc, no
# package manager, running as the image's non-root user (uid 65532). The
# healthcheck tools are baked in for the same reason: there is no curl to
# run. `go test ./deploy/` builds the binaries with the very commands below
# and checks they are static.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, in their own layer: they change far less often than the
# code, so an edit to a .go file does not download them again.
COPY go.mod go.sum ./
RUN go mod download
# Kubernetes probes speak grpc.health.v1 natively; docker compose needs a
# binary for it. Pinned: a healthcheck must not change under a rebuild.
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags="-s -w" github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
COPY . .
# CGO_ENABLED=0: no libc to link against in distroless/static. -trimpath
# keeps the build machine's paths out of the binary (and its panics);
# -s -w drops the symbol table and DWARF, which a container never reads.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tokengate ./cmd/tokengate
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/openai-mock ./cmd/openai-mock
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/httpcheck ./deploy/httpcheck

# The demo upstream. Not a product image: it answers like OpenAI with
# made-up text and exact usage, so tokengate's counts can be checked.
FROM gcr.io/distroless/static-debian12:nonroot AS openai-mock
COPY --from=build /out/openai-mock /out/httpcheck /usr/local/bin/
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/openai-mock"]
# 0.0.0.0, not the binary's loopback default: Envoy calls it from another
# container.
CMD ["--listen", "0.0.0.0:8080"]

# tokengate, last so that it is what a plain `docker build .` produces.
FROM gcr.io/distroless/static-debian12:nonroot AS tokengate
COPY --from=build /out/tokengate /out/grpc-health-probe /usr/local/bin/
# The demo stack's configuration (Redis at redis:6379), baked in so the
# image starts as the stack runs it; compose mounts the same file over it
# so an edit needs a restart, not a rebuild, and Kubernetes mounts its
# ConfigMap here.
COPY deploy/tokengate.yaml /etc/tokengate/tokengate.yaml
USER nonroot:nonroot
# 50051: ext_proc, grpc.health.v1 and reflection. 9090: admin HTTP
# (/healthz, /readyz, /metrics) and the admin gRPC API.
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/tokengate"]
# Arguments apart from the binary, so `docker run tokengate --log-level
# debug` or a compose command can replace them; repeat --config then.
CMD ["--config", "/etc/tokengate/tokengate.yaml"]
