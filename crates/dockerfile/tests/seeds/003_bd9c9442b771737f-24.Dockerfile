# syntax=docker/dockerfile:1

RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
