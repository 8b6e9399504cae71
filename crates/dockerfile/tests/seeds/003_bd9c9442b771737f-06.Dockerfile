# ========================================
# Stage 1: Build
# ========================================
FROM golang:1.21-alpine AS builder

# Установить build зависимости
RUN apk add --no-cache git ca-certificates

WORKDIR /app

# Кэшировать модули
COPY go.mod go.sum ./
RUN go mod download && go mod verify

# Копировать исходный код
COPY . .

# Сборка с оптимизацией
RUN CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build \
    -a \
    -installsuffix cgo \
    -ldflags="-w -s -X main.version=1.0.0" \
    -o main \
    ./cmd/server

# ========================================
# Stage 2: Runtime
# ========================================
FROM alpine:latest

# Метаданные
LABEL maintainer="team@example.com"
LABEL version="1.0.0"

# Установить runtime зависимости
RUN apk --no-cache add ca-certificates tzdata

# Создать непривилегированного пользователя
RUN adduser -D -u 1000 appuser

WORKDIR /home/appuser

# Копировать бинарник из builder stage
COPY --from=builder /app/main .

# Копировать конфигурационные файлы (если нужно)
# COPY --from=builder /app/config.yaml .

# Переключиться на appuser
USER appuser

EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD wget --no-verbose --tries=1 --spider http://localhost:8080/health || exit 1

CMD ["./main"]
