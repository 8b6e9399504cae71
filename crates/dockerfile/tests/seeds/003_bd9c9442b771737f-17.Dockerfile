# ========================================
# Stage 1: Dependencies
# ========================================
FROM golang:1.21-alpine AS deps

WORKDIR /app

RUN apk add --no-cache git

COPY go.mod go.sum ./
RUN go mod download

# ========================================
# Stage 2: Build application
# ========================================
FROM deps AS app-builder

COPY . .

RUN CGO_ENABLED=0 GOOS=linux go build \
    -ldflags="-w -s" \
    -o /bin/app \
    ./cmd/server

# ========================================
# Stage 3: Build migrations tool
# ========================================
FROM deps AS migrate-builder

RUN go install -tags 'postgres' github.com/golang-migrate/migrate/v4/cmd/migrate@latest

# ========================================
# Stage 4: Runtime
# ========================================
FROM alpine:latest

# Установить runtime зависимости
RUN apk --no-cache add ca-certificates postgresql-client

# Создать пользователя
RUN adduser -D -u 1000 appuser

WORKDIR /home/appuser

# Копировать бинарник приложения
COPY --from=app-builder /bin/app .

# Копировать migrate tool
COPY --from=migrate-builder /go/bin/migrate /usr/local/bin/

# Копировать SQL миграции
COPY --chown=appuser:appuser ./migrations ./migrations

# Копировать entrypoint скрипт
COPY --chown=appuser:appuser ./docker-entrypoint.sh .
RUN chmod +x ./docker-entrypoint.sh

USER appuser

EXPOSE 8080

ENTRYPOINT ["./docker-entrypoint.sh"]
CMD ["./app"]
