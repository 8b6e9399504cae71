# ========================================
# Stage: Базовая конфигурация
# ========================================
FROM golang:1.21-alpine AS base

RUN apk add --no-cache git ca-certificates
WORKDIR /app
COPY go.mod go.sum ./
RUN go mod download

# ========================================
# Stage: Тесты
# ========================================
FROM base AS test

COPY . .
RUN go test -v ./...

# ========================================
# Stage: Build
# ========================================
FROM base AS builder

COPY . .
RUN CGO_ENABLED=0 go build -o main .

# ========================================
# Stage: Runtime
# ========================================
FROM alpine:latest

COPY --from=builder /app/main .
CMD ["./main"]
