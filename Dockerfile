# syntax=docker/dockerfile:1
# podvnet image: the agent (the DaemonSet's one container) and the CNI plugin
# it installs on the node. The BPF objects are committed (bpf2go output), so
# the build needs Go only, no clang. docs/operations.md says how it runs.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=$(git describe --tags --always) --build-arg COMMIT=$(git rev-parse --short HEAD) \
#     -t REGISTRY/podvnet:TAG --push .

# The Go of go.mod, by exact tag (release builds add @sha256:<digest>). It
# runs on the build machine and cross-compiles: the binaries are static.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG COMMIT=unknown
# The Makefile's LDFLAGS, plus -trimpath for reproducible binaries.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    LDFLAGS="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.buildVersion=${VERSION}" && \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags "${LDFLAGS}" -o /out/podvnet-agent ./cmd/agent && \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags "${LDFLAGS}" -o /out/podvnet ./cmd/plugin

# Two static binaries need nothing from a base image: scratch is pinned by
# definition and has no shell (the install step is the agent's own Go
# code). `kubectl exec ... -- podvnet-agent debug ...` needs no shell either.
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="podvnet" \
      org.opencontainers.image.description="Kubernetes pods on the node's Azure VNet, with an eBPF data path" \
      org.opencontainers.image.source="https://github.com/podvnet/podvnet" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/podvnet-agent /usr/local/bin/podvnet-agent
# Copied to the host's CNI bin dir by the agent (--plugin-binary).
COPY --from=build /out/podvnet /opt/podvnet/bin/podvnet
# Root: the agent owns root-only state on the host (the 0600 plugin socket,
# /var/lib/podvnet, /opt/cni/bin, pins) and needs CAP_BPF, CAP_PERFMON,
# CAP_NET_ADMIN and CAP_SYS_ADMIN; the DaemonSet says why it is privileged.
USER 0:0
ENTRYPOINT ["/usr/local/bin/podvnet-agent"]
CMD ["run"]
